"""Each rule of RULES.md §2-§4 as lfgen applies it, with its id and reason."""

from __future__ import annotations

import pytest

from lfgen import BuildOptions, build
from lfgen.catalogs.rules import batch_for, registry

RULES_MD_IDS = ["R-HW-BATCH", "R-HW-HEADROOM", "R-HW-PRECISION", "R-HW-FA", "R-HW-GC", "R-HW-CLIP", "R-DATA-RANK",
                "R-DATA-DROPOUT", "R-DATA-EPOCHS", "R-DATA-WARMUP", "R-DATA-WD", "R-ALPHA", "R-LR", "R-TARGET",
                "R-BIAS", "R-SCHED"]


def decided(result, key):
    return result.decisions[key]


def test_every_rule_of_rules_md_is_registered_with_a_seed():
    for rule_id in RULES_MD_IDS:
        assert registry()[rule_id].seeds, rule_id


UNKNOWN_MODEL = "my-org/private-7b"  # in no catalog and not on disk: the seed's tiers size the batch


@pytest.mark.parametrize("gpu,expected", [("RTX 4090", (2, 16)), ("A100-40", (4, 8)), ("A800", (8, 4)),
                                          ("T4", (1, 32)), ("L40S", (4, 8)), ("H200", (16, 2))])
def test_batch_by_gpu_memory_keeps_effective_32(gpu, expected):
    result = build("a800", BuildOptions.parse(gpu=gpu, model=UNKNOWN_MODEL))
    config = result.config
    assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == expected
    assert decided(result, "per_device_train_batch_size").rule == "R-HW-BATCH"
    assert "effective batch 32" in decided(result, "gradient_accumulation_steps").reason


@pytest.mark.parametrize("memory", [11, 16, 24, 32, 40, 48, 80, 96, 141, 180])
@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 5, 8, 16, 64])
def test_effective_batch_stays_in_32_to_64(memory, gpus):
    micro, accumulation, _ = batch_for(memory, gpus)
    assert 32 <= micro * accumulation * gpus <= 64


def test_gpu_mem_sizes_the_batch_but_keeps_unknown_capabilities():
    result = build("a800", BuildOptions.parse(gpu_mem=40, model=UNKNOWN_MODEL))
    assert (result.config["per_device_train_batch_size"], result.config["gradient_accumulation_steps"]) == (4, 8)
    assert any("bf16 support unknown" in w for w in result.warnings)


@pytest.mark.parametrize("gpu", ["A100-40", "L40S", "A800", "H200"])  # a800 on a 7B does not fit 24 GB (see below)
def test_known_model_and_gpu_get_the_largest_micro_batch_that_fits(gpu):
    result = build("a800", BuildOptions.parse(gpu=gpu, model="Qwen/Qwen2.5-7B-Instruct"))
    micro = result.decisions["per_device_train_batch_size"]
    config = result.config
    assert micro.rule == "R-HW-HEADROOM" and "seed 002's" in micro.alternative
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 32
    budget = result.hardware.gpu.memory_gb * 0.85
    memory = result.estimate.memory_gib  # what must fit: the peak less the cache the allocator releases
    assert memory["total"] - memory.get("releasable_cache", 0) <= budget and result.estimate.fits is True
    bigger = build("a800", BuildOptions.parse(gpu=gpu, model="Qwen/Qwen2.5-7B-Instruct",
                                              set={"per_device_train_batch_size": micro.value * 2}))
    more = bigger.estimate.memory_gib
    assert more["total"] - more.get("releasable_cache", 0) > budget or micro.value * 2 > 32  # the next size up would not


def test_a800_on_a_7b_does_not_fit_a_24gb_card_at_2048_tokens():
    # LlamaFactory #7409 measured 26.1 GB for Qwen2-7B at rank 8, s2048, b1; the a800 preset is rank 64 on every layer.
    result = build("a800", BuildOptions.parse(gpu="RTX 4090", model="Qwen/Qwen2.5-7B-Instruct"))
    assert result.estimate.fits is False and any("cutoff_len" in w for w in result.warnings)
    lighter = build("lightweight", BuildOptions.parse(gpu="RTX 4090", model="Qwen/Qwen2.5-7B-Instruct", cutoff_len=1024))
    assert lighter.estimate.fits is True


def test_a_model_that_cannot_fit_says_what_would():
    result = build("a800", BuildOptions.parse(gpu="RTX 4090", model="meta-llama/Llama-2-70b-hf"))
    warning = next(w for w in result.warnings if w.startswith("R-HW-HEADROOM"))
    assert "does not fit on RTX 4090" in warning and "DeepSpeed ZeRO-3" in warning
    assert result.config["per_device_train_batch_size"] == 1 and result.estimate.fits is False


def test_targets_map_to_the_architectures_real_names():
    assert build("lightweight", BuildOptions.parse(model="EleutherAI/pythia-410m")).config["lora_target"] == \
        "query_key_value"
    assert build("balanced", BuildOptions.parse(model="microsoft/Phi-3-mini-4k-instruct")).config["lora_target"] == \
        "qkv_proj,o_proj"


def test_a_module_the_model_lacks_is_an_error():
    from lfgen.errors import InputError

    with pytest.raises(InputError, match=r"lora_target: 'c_attn' is not a module of Qwen/Qwen2.5-7B-Instruct .*its "
                                         r"Linear layers are"):
        build("a800", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", target="c_attn"))


@pytest.mark.parametrize("gpu", ["T4", "V100-32", "RTX 2080 Ti"])
def test_no_bf16_gpu_trains_in_fp16_mixed_precision_with_the_reason(gpu):
    """R-HW-FP16-AMP: LlamaFactory 0.9.5 does not train in fp32 when bf16 and fp16 are off (it loads the checkpoint in
    its own dtype, with no autocast and no loss scaling), so a GPU without bf16 gets fp16 AMP; seed 001's fp32 is
    the alternative, and --precision fp32 is warned about."""
    result = build("a800", BuildOptions.parse(gpu=gpu))
    assert result.config["bf16"] is False and result.config["fp16"] is True
    fp16 = decided(result, "fp16")
    assert fp16.rule == "R-HW-FP16-AMP" and "no bf16" in fp16.reason and "loss scal" in fp16.reason
    assert "seed 001" in fp16.alternative and "--precision fp32" in fp16.alternative
    assert not any(w.startswith("R-HW-PRECISION") for w in result.warnings)  # fp16 is the rule here, not a risk
    forced = build("a800", BuildOptions.parse(gpu=gpu, precision="fp32"))
    assert forced.config["bf16"] is False and forced.config["fp16"] is False
    assert any(w.startswith("R-HW-FP16-AMP") and "does not train in fp32" in w for w in forced.warnings)


def test_fp16_on_a_gpu_with_bf16_is_a_warning_citing_seed_001():
    result = build("a800", BuildOptions.parse(gpu="A100-80", precision="fp16"))
    assert result.config["fp16"] is True and result.config["bf16"] is False
    assert any(w.startswith("R-HW-PRECISION") and "seed 001" in w for w in result.warnings)


@pytest.mark.parametrize("precision,bf16,fp16", [("fp32", False, False), ("fp16", False, True), ("bf16", True, False)])
def test_precision_on_a_cpu_run_is_yours(precision, bf16, fp16):
    result = build("a800", BuildOptions.parse(precision=precision))
    assert result.config["bf16"] is bf16 and result.config.get("fp16") is fp16
    assert result.decisions["bf16"].rule == "USER" and result.config["use_cpu"] is True


@pytest.mark.parametrize("gpu,attention", [("T4", "sdpa"), ("V100-32", "sdpa"), ("RTX 3090", "sdpa"), ("H100", "sdpa")])
def test_flash_attention_only_where_supported_and_installed(gpu, attention, monkeypatch):
    """R-HW-FA / R-HW-ATTN: fa2 needs the GPU and the flash-attn package; without the package, sdpa."""
    assert build("a800", BuildOptions.parse(gpu=gpu)).config["flash_attn"] == attention
    from lfgen.catalogs import machine

    monkeypatch.setattr(machine, "installed", lambda package: package == "flash_attn")
    installed = build("a800", BuildOptions.parse(gpu=gpu))
    assert installed.config["flash_attn"] == ("fa2" if gpu in ("RTX 3090", "H100") else "sdpa")


def test_rank_moves_alpha_by_the_presets_ratio():
    assert build("a800", BuildOptions.parse(rank=32)).config["lora_alpha"] == 64
    assert build("alpha-4x", BuildOptions.parse(rank=16)).config["lora_alpha"] == 64
    result = build("a800", BuildOptions.parse(rank=32, alpha=16))
    assert result.config["lora_alpha"] == 16 and decided(result, "lora_alpha").rule == "USER"


def test_user_value_wins_and_explain_names_the_overridden_rule():
    result = build("a800", BuildOptions.parse(gpu="A800", lr=3e-4, set={"per_device_train_batch_size": 2},
                                              model=UNKNOWN_MODEL))
    lr = decided(result, "learning_rate")
    assert (lr.value, lr.rule) == (3e-4, "USER") and "overrides R-LR" in lr.reason
    batch = decided(result, "per_device_train_batch_size")
    assert (batch.value, batch.rule) == (2, "USER") and "overrides R-HW-BATCH, which gives 8" in batch.reason


@pytest.mark.parametrize("samples,dropout,epochs,warmup", [(2000, 0.2, 5.0, 0.05), (8000, 0.1, 4.0, 0.1),
                                                          (30000, 0.05, 3.0, 0.1), (60000, 0.0, 1.0, 0.03)])
def test_data_bands(samples, dropout, epochs, warmup):
    config = build("balanced", BuildOptions.parse(samples=samples)).config
    assert (config["lora_dropout"], config["num_train_epochs"], config["warmup_ratio"]) == (dropout, epochs, warmup)


def test_fixed_rank_outside_the_band_is_a_warning_not_a_change():
    result = build("large-rank", BuildOptions.parse(samples=2000))
    assert result.config["lora_rank"] == 128
    assert any("R-DATA-RANK" in w and "outside seed 002's band 16-32" in w for w in result.warnings)


def test_pinned_dropout_is_kept_with_a_warning():
    result = build("aggressive", BuildOptions.parse(samples=2000))
    assert result.config["lora_dropout"] == 0.05
    assert any(w.startswith("R-DATA-DROPOUT") for w in result.warnings)


def test_dropout_disagreement_shows_the_alternative():
    assert "seed 003" in decided(build("a800"), "lora_dropout").alternative


def test_bias_is_not_invented():
    result = build("alpha-4x")
    assert "bias" not in result.config and "lora_bias" not in result.config
    assert any(w.startswith("R-BIAS") and "no LoRA bias option" in w for w in result.warnings)


def test_rank_counted_from_the_local_dataset(dataset_dir):
    result = build("auto", BuildOptions.parse(dataset=["my_sft"], dataset_dir=str(dataset_dir)))
    assert result.samples == 2000 and result.config["lora_rank"] == 32
    assert "2,000 rows" in result.samples_note


def test_jsonl_rows_are_counted(tmp_path):
    from ..conftest import make_dataset_dir

    data = make_dataset_dir(tmp_path / "d", rows=6000, fmt="jsonl")
    assert build("auto", BuildOptions.parse(dataset=["my_sft"], dataset_dir=str(data))).samples == 6000


def test_learning_rate_outside_the_lora_range_warns():
    assert any(w.startswith("R-LR") for w in build("a800", BuildOptions.parse(lr=1e-3)).warnings)


def test_only_o_proj_warns():
    assert any(w.startswith("R-TARGET") for w in build("a800", BuildOptions.parse(target="o_proj")).warnings)


def test_target_sets_resolve():
    assert build("a800", BuildOptions.parse(target="qv")).config["lora_target"] == "q_proj,v_proj"
    assert build("a800", BuildOptions.parse(target="attn")).config["lora_target"] == "q_proj,k_proj,v_proj,o_proj"


@pytest.mark.parametrize("model,template", [("Qwen/Qwen2.5-7B-Instruct", "qwen"), ("Qwen/Qwen3-8B", "qwen3"),
                                            ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama3"),
                                            ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
                                            ("google/gemma-2-9b-it", "gemma2"), ("/models/unknown-thing", "default")])
def test_template_from_the_model_family(model, template):
    assert build("a800", BuildOptions.parse(model=model)).config["template"] == template


def test_headroom_warning_when_the_seed_figure_does_not_fit():
    assert any(w.startswith("R-HW-HEADROOM") for w in build("large-rank", BuildOptions.parse(gpu="4090")).warnings)
    assert not any(w.startswith("R-HW-HEADROOM") for w in build("lightweight", BuildOptions.parse(gpu="4090")).warnings)
