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
    found = calibrate([str(one), str(two)])
    rows, factors = found.memory, found.factors
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


def test_a_cpu_run_without_a_gpu_in_its_recipe_is_told_it_measured_nothing(tmp_path, runner, cli):
    """Issue 21: calibrate on a CPU run (built without --gpu) first asked for --gpu, then refused the run anyway."""
    import json

    from lfgen import BuildOptions, build, render_build

    out = tmp_path / "outputs" / "cpu"
    out.mkdir(parents=True)
    (out / "lfgen_run.yaml").write_text(render_build(build("lightweight", BuildOptions.parse(
        model="Qwen/Qwen2.5-7B-Instruct"))))
    (out / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 1, "total_steps": 2, "loss": 1.0,
                                                       "vram_allocated": -0.0, "vram_reserved": -0.0}) + "\n")
    result = runner.invoke(cli, ["calibrate", str(out)])
    assert result.exit_code == 1 and "--gpu" not in result.stderr
    # the recipe records the CPU where lfgen built it on a GPU-less machine (R-HW-CPU), else the log shows it
    assert result.stderr.startswith((f"Error: {out}: trained on the CPU, which measures no GPU memory",
                                     f"Error: {out}: trainer_log.jsonl has no GPU measurement"))


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


# --- time: throughput corrections per (device, method) -------------------------------------------------


def _uncalibrated(out):
    from lfgen.builder.run_estimate import estimate_written, placement, read_written
    from lfgen.catalogs.gpus import cpu_device

    written = read_written(out / "lfgen_run.yaml")
    where = placement(written, {"device": "cpu"})
    assert where.gpu == cpu_device()
    found = estimate_written(written, where, calibrated=False)
    return found.time["train_s"] + found.time["eval_s"]


def test_cpu_runs_calibrate_time_without_asking_for_a_gpu(tmp_path):
    from tests.helpers import timed_run_dir

    one, _ = timed_run_dir(tmp_path, "a", train_s=120.0, eval_s=6.0, startup_s=25.0)
    two, _ = timed_run_dir(tmp_path, "b", train_s=200.0, startup_s=35.0, rank=16)
    estimate = _uncalibrated(one)
    found = calibrate([str(one), str(two)])
    assert not found.memory and [s[1] for s in found.skipped] == ["memory", "memory"]
    assert "trained on the CPU" in found.skipped[0][2]
    first = found.times[0]
    assert (first.gpu, first.method, first.measured_s) == ("CPU", "lora", 126.0)
    assert first.estimate_s == pytest.approx(estimate, abs=0.11)
    assert first.startup_s == pytest.approx(25.0)
    entry = load_calibration()["time|CPU|lora"]
    ratios = sorted(t.measured_s / t.estimate_s for t in found.times)
    assert entry["factor"] == pytest.approx(sum(ratios) / 2, rel=1e-3) and entry["runs"] == 2
    assert entry["startup_s"] == pytest.approx(30.0)


def test_a_cpu_run_is_timed_on_the_cpu_whatever_gpu_is_named(tmp_path):
    # --gpu names the card for runs that do not say theirs; a run that says it trained on the CPU was measured there
    from tests.helpers import timed_run_dir

    one, _ = timed_run_dir(tmp_path, "a", train_s=120.0, eval_s=6.0, startup_s=25.0)
    found = calibrate([str(one)], gpu="A100-80")
    assert [(t.gpu, t.measured_s) for t in found.times] == [("CPU", 126.0)]
    assert "time|CPU|lora" in load_calibration() and not any("A100" in key for key in load_calibration())


def test_later_estimates_use_the_correction_and_say_so(tmp_path):
    from lfgen.builder.run_estimate import estimate_written, placement, read_written
    from tests.helpers import timed_run_dir

    out, _ = timed_run_dir(tmp_path, "a", train_s=300.0, startup_s=40.0)
    written = read_written(out / "lfgen_run.yaml")
    where = placement(written, {"device": "cpu"})
    before = estimate_written(written, where)
    calibrate([str(out)])
    after = estimate_written(written, where)
    factor = load_calibration()["time|CPU|lora"]["factor"]
    assert after.time["train_s"] == pytest.approx(before.time["train_s"] * factor, rel=0.02)
    assert after.wall_s == pytest.approx(after.time["train_s"] + after.time["eval_s"] + 40.0, abs=0.2)
    assert after.time["low_s"] < after.wall_s < after.time["high_s"]
    assert after.basis["calibration"]["runs"] == 1
    assert any(note.startswith("calibrated from 1 run(s) on CPU (lora)") for note in after.basis["notes"])
    # the uncalibrated estimate is what calibrate compares with: measuring again gives the same factor
    assert calibrate([str(out)], store=False).time_factors["time|CPU|lora"]["factor"] == pytest.approx(factor)


def test_explain_names_a_gpu_calibration(tmp_path, runner, cli):
    from tests.helpers import TIME_MODEL, timed_run_dir

    out, _ = timed_run_dir(tmp_path, "g", train_s=50.0, gpus=("NVIDIA A100-SXM4-80GB",), gpu="A100-80")
    found = calibrate([str(out)])
    assert [t.gpu for t in found.times] == ["A100-80"] and "time|A100-80|lora" in load_calibration()
    args = ["explain", "lightweight", "--model", TIME_MODEL, "--gpu", "A100-80", "--samples", "400",
            "--set", "max_steps=40"]
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert "calibrated from 1 run(s) on A100-80 (lora)" in shown.stdout and "start-up" in shown.stdout
    data = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert data["time_basis"]["calibration"]["runs"] == 1
    assert data["time"]["train_s"] + data["time"]["eval_s"] == pytest.approx(50.0, rel=0.02)


def test_a_run_with_neither_memory_nor_time_is_one_error_and_nothing_is_stored(tmp_path, runner, cli):
    from tests.helpers import timed_run_dir

    good, _ = timed_run_dir(tmp_path, "good", train_s=60.0)
    bad, _ = timed_run_dir(tmp_path, "bad", train_s=60.0)
    (bad / "all_results.json").unlink()
    result = runner.invoke(cli, ["calibrate", str(good), str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: {bad}: trained on the CPU, which measures no GPU memory; and no time")
    assert "holds a time yet" in result.stderr and load_calibration() == {}


def test_a_broken_start_up_in_the_file_is_refused(tmp_path):
    from lfgen.errors import StateError

    (tmp_path / "calibration.json").write_text(json.dumps({"time|CPU|lora": {"factor": 2.0, "startup_s": "ten"}}))
    with pytest.raises(StateError, match="startup_s must be a number"):
        load_calibration()


def test_cli_shows_the_time_table(tmp_path, runner, cli):
    from tests.helpers import timed_run_dir

    out, _ = timed_run_dir(tmp_path, "a", train_s=80.0, startup_s=20.0)
    result = runner.invoke(cli, ["calibrate", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "80.0s" in result.stdout and "CPU" in result.stdout and "time x" in result.stderr
    assert "no memory calibration" in result.stderr and load_calibration() == {}
    data = json.loads(runner.invoke(cli, ["calibrate", str(out), "--json", "--dry-run"]).stdout)
    assert data["time_runs"][0]["measured_s"] == 80.0 and "time|CPU|lora" in data["time_factors"]
