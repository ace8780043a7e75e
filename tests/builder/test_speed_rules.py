"""R-HW-FA / R-HW-ATTN (fa2 only with flash-attn installed; Gemma 2 eager without it) and R-HW-THROUGHPUT (Liger where
installed and patched, gradient checkpointing off where the same micro-batch still fits, packing as advice)."""

from __future__ import annotations

import pytest

from lfgen import BuildOptions, build
from lfgen.catalogs import machine


@pytest.fixture
def installed(monkeypatch):
    """Pretend these optional packages are installed (the suite's fixture says none is)."""

    def make(*packages: str) -> None:
        monkeypatch.setattr(machine, "installed", lambda package: package in packages)

    return make


def test_fa2_needs_the_package_as_well_as_the_gpu(installed):
    without = build("lightweight", BuildOptions.parse(gpu="A100-80"))
    assert without.config["flash_attn"] == "sdpa" and without.decisions["flash_attn"].rule == "R-HW-ATTN"
    assert "flash-attn is not installed here" in without.decisions["flash_attn"].reason
    installed("flash_attn")
    assert build("lightweight", BuildOptions.parse(gpu="A100-80")).config["flash_attn"] == "fa2"
    assert build("lightweight", BuildOptions.parse(gpu="T4")).config["flash_attn"] == "sdpa"  # Turing: no fa2


def test_gemma2_without_flash_attn_runs_eager_and_the_estimate_counts_it(installed):
    """LlamaFactory runs Gemma 2 eagerly without FlashAttention-2 (soft-capping): lfgen writes that and counts the
    s^2 scores, instead of writing fa2 and estimating a kernel the run will not have."""
    eager = build("lightweight", BuildOptions.parse(model="google/gemma-2-9b-it", gpu="A100-80"))
    assert eager.config["flash_attn"] == "disabled"
    assert any(w.startswith("R-HW-ATTN") and "pip install flash-attn" in w for w in eager.warnings)
    assert any("eager" in note for note in eager.estimate.notes)
    installed("flash_attn")
    fast = build("lightweight", BuildOptions.parse(model="google/gemma-2-9b-it", gpu="A100-80"))
    assert fast.config["flash_attn"] == "fa2"
    assert fast.estimate.memory_gib["total"] < eager.estimate.memory_gib["total"]


def test_a_written_fa2_without_the_package_is_a_warning():
    result = build("lightweight", BuildOptions.parse(gpu="A100-80", set={"flash_attn": "fa2"}))
    assert any(w.startswith("R-HW-ATTN: flash_attn fa2: flash-attn is not installed here") for w in result.warnings)


def test_liger_where_installed_for_sft_of_a_patched_model(installed):
    options = {"model": "Qwen/Qwen2.5-7B-Instruct", "gpu": "RTX 4090"}
    assert "enable_liger_kernel" not in build("lightweight", BuildOptions.parse(**options)).config
    installed("liger_kernel")
    result = build("lightweight", BuildOptions.parse(**options))
    assert result.config["enable_liger_kernel"] is True
    assert result.decisions["enable_liger_kernel"].rule == "R-HW-THROUGHPUT"
    assert "the same loss" in result.decisions["enable_liger_kernel"].reason
    assert result.estimate.memory_gib["logits"] < 1  # the fused loss never holds the full-vocabulary logits
    dpo = build("lightweight", BuildOptions.parse(**options, stage="dpo"))  # LlamaFactory keeps the logits there
    assert "enable_liger_kernel" not in dpo.config


def test_checkpointing_off_only_where_the_same_micro_batch_still_fits():
    small = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-0.5B-Instruct", gpu="H200", cutoff_len=256,
                                             samples=5000))
    decision = small.decisions["disable_gradient_checkpointing"]
    assert small.config["disable_gradient_checkpointing"] is True and decision.rule == "R-HW-THROUGHPUT"
    assert f"micro-batch {small.config['per_device_train_batch_size']} fits without gradient checkpointing" in \
        decision.reason and "R-HW-GC" in decision.alternative
    assert small.estimate.fits  # the estimate of the written config, checkpointing off, fits
    big = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="A100-80", samples=5000))
    assert big.config["disable_gradient_checkpointing"] is False  # 8 x 2048 tokens of a 7B model: it would not
    yours = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-0.5B-Instruct", gpu="H200", cutoff_len=256,
                                             samples=5000, set={"disable_gradient_checkpointing": False}))
    assert yours.config["disable_gradient_checkpointing"] is False


def test_many_short_samples_get_packing_advice_not_packing(tmp_path):
    import json

    root = tmp_path / "data"
    root.mkdir()
    rows = [{"instruction": "q" * 40, "input": "", "output": "a" * 40} for _ in range(300)]  # ~20 tokens each
    (root / "short.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"short": {"file_name": "short.json"}}))
    result = build("lightweight", BuildOptions.parse(dataset=["short"], dataset_dir=str(root), cutoff_len=1024))
    (advice,) = [w for w in result.warnings if w.startswith("R-HW-THROUGHPUT")]
    assert "--set neat_packing=true" in advice and "effective batch change" in advice
    assert "neat_packing" not in result.config and "packing" not in result.config
