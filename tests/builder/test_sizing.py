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
