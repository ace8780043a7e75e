"""--quant 4|8 (QLoRA as an option, and the fit advice as a flag to pass back) and --headroom PCT."""

from __future__ import annotations

import pytest

from lfgen import BuildOptions, build
from lfgen.builder.sizing import flag_for
from lfgen.errors import InputError

BIG = "Qwen/Qwen2.5-14B-Instruct"


def test_the_fit_advice_is_a_flag_the_user_can_pass_back():
    refused = build("a800", BuildOptions.parse(model=BIG, gpu="4090"))
    (warning,) = [w for w in refused.warnings if "does not fit" in w]
    assert "with --quant 4 it would, ~" in warning
    quantized = build("a800", BuildOptions.parse(model=BIG, gpu="4090", quant=4))
    assert quantized.config["quantization_bit"] == 4 and quantized.estimate.fits
    advised = float(warning.split("with --quant 4 it would, ~")[1].split(" GiB")[0])
    memory = quantized.estimate.memory_gib  # the advice is what must fit: the peak less the releasable cache
    assert memory["total"] - memory.get("releasable_cache", 0) == pytest.approx(advised, abs=0.05)


def test_quant_names_bitsandbytes_and_the_compute_dtype_of_the_precision():
    result = build("a800", BuildOptions.parse(model=BIG, gpu="T4", quant=8))
    decision = result.decisions["quantization_bit"]
    # a T4 has no bf16: fp16 mixed precision (R-HW-FP16-AMP)
    assert decision.rule == "USER" and "bitsandbytes 8-bit" in decision.reason and "computing in fp16" in decision.reason
    assert "computing in bf16" in build("a800", BuildOptions.parse(quant=4, gpu="A100-80")).decisions[
        "quantization_bit"].reason
    with pytest.raises(InputError, match="--quant: bitsandbytes quantization needs a GPU"):
        build("a800", BuildOptions.parse(quant=4, gpu="cpu"))


def test_quant_is_refused_for_full_fine_tuning_and_bad_bits():
    with pytest.raises(InputError, match="--quant 4: LlamaFactory quantizes only LoRA and OFT"):
        build("auto", BuildOptions.parse(quant=4, gpu="A100-80", set={"finetuning_type": "full"}))
    with pytest.raises(InputError, match="--quant"):
        BuildOptions.parse(quant=3)


def test_headroom_override_lets_a_user_accept_the_risk():
    options = {"model": BIG, "gpu_mem": 23.0, "quant": 4}
    assert not build("a800", BuildOptions.parse(**options)).estimate.fits  # 19.7 GiB > 23 x 0.85
    accepted = build("a800", BuildOptions.parse(**options, headroom=10))
    assert accepted.estimate.fits and accepted.headroom == 0.10
    assert "(10% left free)" in accepted.decisions["per_device_train_batch_size"].reason
    with pytest.raises(InputError, match="--headroom"):
        BuildOptions.parse(headroom=100)


def test_flags_for_every_fit_option(monkeypatch):
    """Every flag works on a pip install: ZeRO is --zero (lfgen writes LlamaFactory's JSON), not a path into a git
    checkout of LlamaFactory; a change that needs a package this Python lacks says to install it."""
    from lfgen.catalogs import machine

    assert flag_for({"quantization_bit": 4}) == "--quant 4"
    assert flag_for({"cutoff_len": 512}) == "--cutoff-len 512"
    assert flag_for({"num_gpus": 2, "zero_stage": 3}) == "--num-gpus 2 --zero 3 (after pip install deepspeed)"
    assert flag_for({"enable_liger_kernel": True}) == "--set enable_liger_kernel=true (after pip install liger-kernel)"
    assert flag_for({"gradient_checkpointing": True}) == "--set disable_gradient_checkpointing=false"
    monkeypatch.setattr(machine, "installed", lambda package: True)
    assert flag_for({"num_gpus": 2, "zero_stage": 3}) == "--num-gpus 2 --zero 3"
    assert flag_for({"enable_liger_kernel": True}) == "--set enable_liger_kernel=true"


def test_quant_and_headroom_on_the_command_line(runner, cli):
    result = runner.invoke(cli, ["preset", "a800", "--model", BIG, "--gpu", "4090", "--quant", "4",
                                 "--headroom", "10"], catch_exceptions=False)
    assert result.exit_code == 0 and "quantization_bit: 4  # USER" in result.stdout
    assert "--quant 4 --headroom 10" in result.stdout  # the recipe's command line rebuilds it
    bad = runner.invoke(cli, ["preset", "a800", "--quant", "3"])
    assert bad.exit_code == 2 and "'3' is not one of '4', '8'" in bad.output


# --- the CPU target (R-HW-CPU; issue 21 item 8) ------------------------------------------------------------------


def test_a_cpu_run_writes_what_a_cpu_needs():
    """--gpu cpu: no bf16, no FlashAttention, use_cpu, a small micro-batch, no estimate, no warning (it was asked)."""
    result = build("lightweight", BuildOptions.parse(gpu="cpu"))
    config = result.config
    assert (config["bf16"], config["use_cpu"], config["flash_attn"]) == (False, True, "sdpa")
    assert "fp16" not in config and config["per_device_train_batch_size"] == 2
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 32
    assert result.cpu and result.hardware is None and result.estimate is None and result.fit is None
    assert {result.decisions[k].rule for k in ("bf16", "use_cpu", "per_device_train_batch_size")} == {"R-HW-CPU"}
    assert not any(w.startswith("R-HW-CPU") for w in result.warnings)


def test_no_gpu_here_and_none_named_is_a_cpu_run_with_a_warning(monkeypatch):
    """Without --gpu lfgen does not assume a bf16 GPU: on a machine with none it writes a CPU config and says why."""
    from lfgen.catalogs import machine

    monkeypatch.delenv(machine.GPU_ENV, raising=False)
    monkeypatch.setattr(machine, "driver_gpus", lambda: [])
    result = build("a800")
    assert result.config["bf16"] is False and result.config["use_cpu"] is True and result.config["flash_attn"] != "fa2"
    (warning,) = [w for w in result.warnings if w.startswith("R-HW-CPU")]
    assert "no GPU is visible here and none was named" in warning and "--gpu NAME" in warning
    assert result.options.gpu == "cpu"  # the recipe records what it was sized for: rebuilt anywhere, the same file


def test_the_gpu_seen_here_sizes_the_config(monkeypatch):
    from lfgen.catalogs import machine

    monkeypatch.delenv(machine.GPU_ENV, raising=False)
    monkeypatch.setattr(machine, "driver_gpus", lambda: ["Tesla T4"])
    result = build("lightweight", BuildOptions.parse(model="Qwen/Qwen2.5-0.5B-Instruct"))
    assert result.hardware.gpu.name == "T4" and result.config["fp16"] is True and result.estimate is not None
    assert result.options.gpu == "T4"


def test_a_base_file_keeps_the_hardware_it_was_written_for(tmp_path):
    """explain FILE and --base FILE never turn a GPU config into a CPU one because this machine has no GPU."""
    path = tmp_path / "gpu.yaml"
    path.write_text("model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nstage: sft\ndo_train: true\nfinetuning_type: lora\n"
                    "bf16: true\nflash_attn: fa2\noutput_dir: out\n")
    result = build(str(path))
    assert result.config["bf16"] is True and result.config["flash_attn"] == "fa2" and "use_cpu" not in result.config
    assert not result.cpu


@pytest.mark.parametrize("options,message", [
    ({"quant": 4}, "--quant: bitsandbytes quantization needs a GPU"),
    ({"num_gpus": 2}, "--num-gpus: a CPU run trains in one process"),
    ({"zero": 3}, "--zero: DeepSpeed ZeRO shards across GPUs"),
])
def test_what_a_cpu_cannot_do_is_an_error(options, message):
    with pytest.raises(InputError, match=message):
        build("lightweight", BuildOptions.parse(gpu="cpu", **options))


# --- precision without bf16 (R-HW-FP16-AMP) and the dtype really loaded ----------------------------------------


def test_7b_qlora_on_a_t4_fits_in_fp16_not_fp32():
    """Issue 20: bf16 off with no fp16 was counted as fp32 weights, so 7B QLoRA on a T4 did not fit; LlamaFactory
    loads the checkpoint's 16-bit weights either way, and lfgen now writes fp16 AMP there."""
    result = build("lightweight", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="T4", quant=4))
    assert result.config["fp16"] is True and result.estimate.fits
    assert result.estimate.memory_gib["weights"] < 6  # NF4 layers + 16-bit embeddings and head, not 4-byte ones
    forced = build("lightweight", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="T4", quant=4,
                                                     precision="fp32"))
    assert forced.estimate.memory_gib["weights"] == pytest.approx(result.estimate.memory_gib["weights"])


def test_a_local_fp32_checkpoint_is_counted_at_four_bytes(tmp_path):
    import json

    from lfgen.builder.estimates import checkpoint_dtype, settings_for

    config = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}
    for name, dtype in (("m32", {"torch_dtype": "float32"}), ("m16", {"dtype": "bfloat16"}), ("none", {})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **dtype}))
    assert [checkpoint_dtype(str(tmp_path / n)) for n in ("m32", "m16", "none")] == ["fp32", "bf16", "bf16"]
    values = settings_for({"model_name_or_path": str(tmp_path / "m32"), "bf16": True}, 1)
    assert (values["compute_dtype"], values["weights_dtype"]) == ("bf16", "fp32")
    assert settings_for({"model_name_or_path": str(tmp_path / "m16")}, 1)["compute_dtype"] == "bf16"
