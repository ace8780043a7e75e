"""A config's time and cost (lfgen/builder/timing.py): LlamaFactory's keys decide the method, the stage and the
schedule; what is unknown comes back as a reason, never a guess."""

from __future__ import annotations

import pytest

from lfgen.builder.data_lengths import Lengths
from lfgen.builder.explain import explain
from lfgen.builder.options import BuildOptions
from lfgen.builder.timing import estimate_config_time, schedule, time_settings
from lfgen.catalogs.gpus import find_gpu, gpu_with_memory

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
CONFIG = {"model_name_or_path": MODEL, "stage": "sft", "finetuning_type": "lora", "lora_rank": 16, "lora_target": "all",
          "per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "cutoff_len": 2048, "bf16": True,
          "num_train_epochs": 2.0, "val_size": 0.05, "eval_strategy": "steps", "eval_steps": 50,
          "per_device_eval_batch_size": 4}
LENGTHS = Lengths(count=2000, p50=180, p90=520, p99=1400, max=3100, mean=240.0, method="measured")


@pytest.fixture(autouse=True)
def no_user_prices(tmp_path, monkeypatch):
    monkeypatch.setenv("LFGEN_PRICES", str(tmp_path / "none.yaml"))


def test_the_config_keys_decide_the_settings():
    s = time_settings({**CONFIG, "stage": "pt"}, 2)
    assert (s.micro_batch, s.gradient_accumulation, s.num_gpus, s.packing, s.method) == (4, 8, 2, True, "lora")
    assert time_settings({**CONFIG, "quantization_bit": 4}, 1).method == "qlora"
    assert time_settings({**CONFIG, "finetuning_type": "full"}, 1).method == "full"
    assert time_settings({**CONFIG, "train_sampling_strategy": "group_by_length"}, 1).group_by_length
    dpo = time_settings({**CONFIG, "stage": "dpo", "pref_loss": "simpo", "disable_gradient_checkpointing": True}, 1)
    assert (dpo.stage, dpo.pref_loss, dpo.gradient_checkpointing) == ("dpo", "simpo", False)


def test_the_schedule_holds_out_val_size_and_evaluates_on_it():
    plan = schedule(CONFIG, 2000)
    assert (plan.samples, plan.eval_samples, plan.eval_steps, plan.eval_batch) == (1900, 100, 50, 4)
    assert schedule({**CONFIG, "eval_strategy": "no"}, 2000).eval_samples == 0
    assert schedule({**CONFIG, "predict_with_generate": True, "max_new_tokens": 64}, 2000).generate_tokens == 64


def test_time_and_cost_of_a_config():
    found = estimate_config_time(MODEL, CONFIG, find_gpu("L40S"), 1, 2000, LENGTHS)
    assert set(found.time) == {"train_s", "eval_s", "low_s", "high_s", "tokens", "tokens_per_s"}
    assert set(found.cost) == {"usd", "usd_per_gpu_hour", "price_source"}
    assert found.time["low_s"] < found.time["train_s"] + found.time["eval_s"] < found.time["high_s"]
    hours = (found.time["train_s"] + found.time["eval_s"]) / 3600
    assert found.cost["usd"] == pytest.approx(hours * found.cost["usd_per_gpu_hour"], abs=0.01)
    assert found.basis["optimizer_steps"] == 120  # 1900 / 4 = 475 batches / 8 = 60 per epoch x 2 epochs
    unmeasured = estimate_config_time(MODEL, CONFIG, find_gpu("L40S"), 1, 2000, None)
    assert unmeasured.time["train_s"] > found.time["train_s"]  # every sample at cutoff_len: an upper bound
    assert any("upper bound" in n for n in unmeasured.basis["notes"])


def test_a_cpu_offload_config_says_its_time_leaves_the_offload_out():
    """R-MULTI-DS: the step time does not model offload's PCIe trips and CPU Adam step; the basis says so."""
    offload = estimate_config_time(MODEL, {**CONFIG, "deepspeed": "ds_z3_offload_config.json"}, find_gpu("L40S"), 2,
                                   2000, LENGTHS)
    assert any("CPU offload" in n and "slower" in n for n in offload.basis["notes"])
    plain = estimate_config_time(MODEL, {**CONFIG, "deepspeed": "ds_z3_config.json"}, find_gpu("L40S"), 2, 2000, LENGTHS)
    assert not any("CPU offload" in n for n in plain.basis["notes"])


def test_a_known_price_is_used_and_a_missing_one_is_said():
    priced = estimate_config_time(MODEL, CONFIG, find_gpu("V100-32"), 1, 2000, LENGTHS, price=0.9)
    assert priced.cost["usd_per_gpu_hour"] == 0.9 and priced.cost["price_source"] == "--price"
    unpriced = estimate_config_time(MODEL, CONFIG, find_gpu("V100-32"), 1, 2000, LENGTHS)
    assert unpriced.time is not None and unpriced.cost is None and "--price" in unpriced.note


@pytest.mark.parametrize("gpu,samples,says", [(None, 2000, "--gpu"), (gpu_with_memory(24), 2000, "--gpu"),
                                              (find_gpu("L40S"), None, "--samples")])
def test_what_is_unknown_comes_back_as_a_reason(gpu, samples, says):
    found = estimate_config_time(MODEL, CONFIG, gpu, 1, samples, LENGTHS)
    assert found.time is None and found.cost is None and says in found.note


def test_explain_json_carries_time_and_cost():
    result = explain("balanced", BuildOptions.parse(model=MODEL, gpu="L40S", samples=3000), price=1.5).to_json()
    assert set(result["time"]) == {"train_s", "eval_s", "low_s", "high_s", "tokens", "tokens_per_s"}
    assert result["cost"]["usd_per_gpu_hour"] == 1.5 and result["cost"]["price_source"] == "--price"
    assert result["time_basis"]["optimizer_steps"] > 0
    no_gpu = explain("balanced", BuildOptions.parse(model=MODEL, samples=3000)).to_json()
    assert no_gpu["time"] is None and no_gpu["cost"] is None and "--gpu" in no_gpu["time_note"]
