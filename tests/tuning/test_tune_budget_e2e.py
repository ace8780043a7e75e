"""For real, on the CPU: lfgen tune --budget stops a real tiny study before it overruns, calibrated on the CPU.

A first real run is calibrated (lfgen calibrate on a CPU run: no --gpu asked), so each trial's estimate is the
machine's own measured speed and start-up. The study is given room for about two trials of six; it must stop with
the measured spend (wall time x devices, from the experiment's event log) within the budget, recorded as stopped
by budget, its spend per trial shown by lfgen tune, lfgen status and the report, and go on when the budget is
raised. No stand-ins: real llamafactory-cli trains every run."""

from __future__ import annotations

import json

import pytest

from ..conftest import needs_llamafactory
from tests.helpers import lfgen

pytestmark = [pytest.mark.slow, needs_llamafactory]
pytest.importorskip("optuna")

TRIALS = 6
SETTINGS = {"max_steps": 4, "logging_steps": 1, "save_steps": 100, "eval_steps": 2, "eval_strategy": "steps",
            "val_size": 0.1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "overwrite_cache": True, "cutoff_len": 128}
BUILD = ["--base", "lightweight", "--model", "./tiny-model", "--template", "qwen", "--dataset", "tiny_alpaca",
         "--dataset-dir", "data", "--precision", "fp32",
         *[arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]]


def _spent(project, name):
    from pathlib import Path

    from lfgen.runs.manifest import load
    from lfgen.runs.spend import experiment_spend

    experiment = load(project / "experiments" / name)
    runs = [(run.name, run.output_dir) for run in experiment.manifest.runs]
    return experiment_spend(project / "experiments" / name / "state.sqlite", Path(project), runs)


def test_the_budget_stops_a_real_study_before_it_overruns_and_a_raised_budget_goes_on(tmp_path, monkeypatch):
    from lfgen import BuildOptions, build
    from lfgen.runs.study import budget_stop, load_rows
    from lfgen.tiny import make_dataset, make_model
    from lfgen.tuning.budget import STOP_MARGIN_S, estimate

    make_model(tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    # 1. calibrate on the CPU from one real run (lfgen_env.json says it trained on the CPU: no --gpu needed)
    made = lfgen(tmp_path, "sweep", "rank", "8", "--name", "cal", *BUILD)
    assert made.returncode == 0, made.stderr
    ran = lfgen(tmp_path, "run", "cal", "--quiet")
    assert ran.returncode == 0, ran.stderr[-3000:]
    calibrated = lfgen(tmp_path, "calibrate", "outputs/cal/rank-8")
    assert calibrated.returncode == 0, calibrated.stderr
    assert "time x" in calibrated.stderr and "CPU / lora" in calibrated.stderr and "--gpu" not in calibrated.stderr

    # 2. room for about two trials at the high end of the calibrated estimate
    monkeypatch.chdir(tmp_path)
    options = BuildOptions.parse(model="./tiny-model", template="qwen", dataset=["tiny_alpaca"], dataset_dir="data",
                                 precision="fp32", set=SETTINGS)
    each, why, cost = estimate(build("lightweight", options))
    assert each is not None, why
    assert cost.basis["calibration"]["runs"] == 1  # the estimate is the machine's measured speed
    budget = float(f"{2.2 * each.high_gpu_hours:.6g}")  # the value as passed on the command line, compared below
    space = tmp_path / "space.yaml"
    space.write_text("lora_rank: {choices: [4, 8, 16]}\nlearning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    tuned = lfgen(tmp_path, "tune", "t", *BUILD, "--space", "space.yaml", "--trials", str(TRIALS), "--pruner", "none",
                  "--budget", repr(budget), timeout=1200)
    assert tuned.returncode == 0, tuned.stderr[-4000:]
    assert "Traceback" not in tuned.stderr and "stopped by budget" in tuned.stderr
    spends = _spent(tmp_path, "t")
    spent = sum(s.gpu_hours for s in spends.values())
    trained = [name for name, s in spends.items() if s.attempts]
    print(f"\nbudget {budget * 3600:.1f} GPU-s; per trial estimated {each.wall_s:.1f} s (high {each.high_s:.1f} s); "
          f"measured {', '.join(f'{n} {s.wall_s:.1f} s' for n, s in spends.items())}; spent {spent * 3600:.1f} GPU-s")
    assert spent <= budget, f"overran: {spent * 3600:.1f} of {budget * 3600:.1f} GPU-seconds"
    assert 1 <= len(trained) < TRIALS
    stop = budget_stop(tmp_path / "experiments/t")
    assert stop is not None and stop["budget_gpu_hours"] == pytest.approx(budget, rel=1e-5)
    assert stop["spent_gpu_hours"] + stop["running_gpu_hours"] + stop["next_gpu_hours"] > budget
    # Two correct ends, by how fast this machine runs now against its calibration: a trial the study cannot afford
    # is not started (waiting); a trial that runs slower than its high estimate (a loaded machine) is stopped by the
    # measured spend before it overruns (interrupted), or, when its last step was in before the stop landed, recorded
    # done as it is. Either way the spend stays within the budget (above).
    interrupted = bool(stop.get("interrupted"))
    finished = (tmp_path / "outputs/t" / stop["trial"] / "all_results.json").is_file()  # LlamaFactory's last file
    print(f"stopped by budget: {stop['trial']} {'interrupted' if interrupted else 'waiting'}"
          f"{' (its training had ended)' if finished else ''}")
    rows = {row["run"]: row for row in load_rows(tmp_path / "experiments/t")}
    running = [run for run, row in rows.items() if row["state"] == "running"]
    if interrupted and finished:
        assert rows[stop["trial"]]["state"] == "complete" and running == []
    else:
        assert running == [stop["trial"]]
        assert rows[stop["trial"]]["why"].startswith("interrupted: the budget" if interrupted else "waiting: the budget")
    assert (spends[stop["trial"]].attempts == 1) if interrupted else (stop["trial"] not in trained)

    # 3. the spend per trial: status, compare and the report
    status = json.loads(lfgen(tmp_path, "status", "t", "--json").stdout)
    assert {row["run"]: row["gpu_hours"] for row in status} == pytest.approx(
        {name: s.gpu_hours for name, s in spends.items()}, rel=1e-3)
    compared = json.loads(lfgen(tmp_path, "compare", "experiments/t", "--format", "json").stdout)
    assert all(row["gpu_hours"] > 0 for row in compared)
    report = lfgen(tmp_path, "report", "experiments/t", "-o", "report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    assert "stopped by budget" in html and "gpu_hours" in html

    # 4. resumable: a raised budget, with room for one more trial, starts the trial it stopped first; one
    # interrupted goes on (one recorded done as the stop came does not: the next trial starts), and the study stops
    # again before overrunning
    fresh = each.high_gpu_hours * stop.get("study_ratio", 1.0) + STOP_MARGIN_S / 3600  # what a new trial needs
    raised = float(f"{spent + max(stop['next_gpu_hours'], fresh) * 1.1:.6g}")
    again = lfgen(tmp_path, "tune", "t", "--budget", repr(raised), timeout=1200)
    assert again.returncode == 0, again.stderr[-4000:]
    after = _spent(tmp_path, "t")
    goes_on = interrupted and not finished
    assert after[stop["trial"]].attempts == 1 + goes_on  # an interrupted one trains again (it saved no checkpoint)
    assert len([s for s in after.values() if s.attempts]) == len(trained) + (not goes_on)
    assert {row["run"]: row["state"] for row in load_rows(tmp_path / "experiments/t")}[stop["trial"]] == "complete"
    assert sum(s.gpu_hours for s in after.values()) <= raised
    assert "stopped by budget" in again.stderr
