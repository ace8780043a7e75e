"""lfgen calibrate on run directories the test creates: the measured peaks are written here the way
LlamaFactory writes them with RECORD_VRAM=1 (a CPU machine measures no GPU memory)."""

from __future__ import annotations

import json

import pytest

from lfgen import BuildOptions, build
from lfgen.builder.calibration import calibrate
from lfgen.errors import InputError
from lfgen.builder.estimates import load_calibration
from tests.helpers import CALIBRATION_MODEL as MODEL
from tests.helpers import measured_run_dir as run_dir


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    monkeypatch.setenv("LFGEN_CALIBRATION", str(tmp_path / "calibration.json"))
    monkeypatch.chdir(tmp_path)


def test_factor_is_the_median_ratio_and_later_estimates_use_it(tmp_path):
    one, result = run_dir(tmp_path, "r16", [20.0, 31.0, 30.5])
    estimate = result.estimate.memory_gib["total"]
    two, _ = run_dir(tmp_path, "r16b", [estimate * 1.2])
    rows, factors = calibrate([str(one), str(two)])
    assert [r.measured_gib for r in rows] == [31.0, pytest.approx(estimate * 1.2)]
    assert rows[0].estimate_gib == pytest.approx(estimate)
    assert rows[0].error == pytest.approx((estimate - 31.0) / 31.0)
    expected = (31.0 / estimate + 1.2) / 2
    assert factors["A800|qwen2"]["factor"] == pytest.approx(expected, abs=1e-4) and factors["A800|qwen2"]["runs"] == 2
    assert load_calibration()["A800|qwen2"]["factor"] == pytest.approx(expected, abs=1e-4)
    again = build("lightweight", BuildOptions.parse(model=MODEL, gpu="A800", rank=16))
    assert again.estimate.calibration == pytest.approx(expected, abs=1e-4)
    assert again.estimate.memory_gib["calibrated_total"] == pytest.approx(estimate * expected, rel=1e-3)


def test_a_larger_factor_shrinks_the_fitted_micro_batch(tmp_path):
    out, result = run_dir(tmp_path, "r", [0.0])
    before = result.config["per_device_train_batch_size"]
    (out / "trainer_log.jsonl").write_text(json.dumps({"vram_reserved": result.estimate.memory_gib["total"] * 3}))
    calibrate([str(out)])
    after = build("lightweight", BuildOptions.parse(model=MODEL, gpu="A800", rank=16)).config
    assert after["per_device_train_batch_size"] < before
    assert after["per_device_train_batch_size"] * after["gradient_accumulation_steps"] == 32


def test_dry_run_stores_nothing(tmp_path):
    out, _ = run_dir(tmp_path, "r", [25.0])
    calibrate([str(out)], store=False)
    assert load_calibration() == {}


def test_runs_without_measurements_or_config_are_clear_errors(tmp_path):
    out, _ = run_dir(tmp_path, "r", [25.0])
    (out / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 1, "loss": 1.0}) + "\n")
    with pytest.raises(InputError, match="has no vram_reserved; the run must train on a GPU with RECORD_VRAM=1"):
        calibrate([str(out)])
    with pytest.raises(InputError, match="has no lfgen_run.yaml"):
        calibrate([str(tmp_path)])


def test_cli(tmp_path, runner, cli):
    out, _ = run_dir(tmp_path, "r", [25.0])
    result = runner.invoke(cli, ["calibrate", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "25.00" in result.stdout and "factor" in result.stderr and "A800 / qwen2" in result.stderr


def test_runs_trained_on_the_cpu_measured_nothing_and_nothing_is_saved(tmp_path, runner, cli):
    # LlamaFactory with RECORD_VRAM=1 on a CPU: torch.cuda.memory_* are 0, logged as -0.0
    gpu_run, _ = run_dir(tmp_path, "gpu", [25.0])
    cpu_run, _ = run_dir(tmp_path, "cpu", [-0.0, -0.0])
    with pytest.raises(InputError, match="has no GPU measurement .*trained on the CPU"):
        calibrate([str(cpu_run)])
    result = runner.invoke(cli, ["calibrate", str(gpu_run), str(cpu_run)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: {cpu_run}: trainer_log.jsonl has no GPU measurement")
    assert not (tmp_path / "calibration.json").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_the_calibration_file_is_written_atomically_with_the_umask(tmp_path, umask, mode):
    import os

    out, _ = run_dir(tmp_path, "r", [25.0])
    old = os.umask(umask)
    try:
        calibrate([str(out)])
    finally:
        os.umask(old)
    assert (tmp_path / "calibration.json").stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "outputs"]  # no temporary left
