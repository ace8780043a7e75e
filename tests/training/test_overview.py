"""lfgen status without a target: every experiment under --experiments-dir with its runs' state counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.errors import InputError
from lfgen.experiments.make import make_sweep
from lfgen.training.overview import experiments
from lfgen.training.target import resolve
from lfgen.runs.states import RunState
from lfgen.runs.store import Store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    options = BuildOptions.parse(model="fake/model", gpu="A800")
    make_sweep("rank", ["8", "16", "32"], options=options, name="rank-sweep")
    make_sweep("lr", ["1e-4", "2e-4"], options=options, name="lr-sweep")
    target = resolve("rank-sweep")
    store = Store(target.state_path)
    try:
        store.sync_runs(target.runs)
        store.transition("rank-8", RunState.DONE)
        store.transition("rank-16", RunState.FAILED, reason="crashed")
    finally:
        store.close()
    return tmp_path


def test_every_experiment_with_its_counts(project: Path) -> None:
    rows = {row["experiment"]: row for row in experiments()}
    assert list(rows) == ["lr-sweep", "rank-sweep"]
    assert {k: rows["rank-sweep"][k] for k in ("runs", "done", "failed", "running", "interrupted", "pending")} == {
        "runs": 3, "done": 1, "failed": 1, "running": 0, "interrupted": 0, "pending": 1}
    assert (rows["lr-sweep"]["runs"], rows["lr-sweep"]["pending"], rows["lr-sweep"]["done"]) == (2, 2, 0)
    assert not (project / "experiments" / "lr-sweep" / "state.sqlite").exists()  # reading creates nothing


def test_a_broken_experiment_is_listed_with_the_reason(project: Path) -> None:
    (project / "experiments" / "lr-sweep" / "experiment.yaml").write_text("name: [\n")
    rows = {row["experiment"]: row for row in experiments()}
    assert rows["lr-sweep"]["note"].startswith("cannot be read: ") and rows["rank-sweep"]["done"] == 1


def test_no_experiments_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such experiments folder"):
        experiments(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no experiments yet"):
        experiments(tmp_path / "empty")


def test_status_without_a_target(project: Path, runner, cli) -> None:
    result = runner.invoke(cli, ["status"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "experiments: 2 experiment(s)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "rank-sweep" in line)
    assert [cell.strip() for cell in line.strip("│ ").split("│")][:7] == ["rank-sweep", "3", "1", "1", "0", "0", "1"]
    rows = json.loads(runner.invoke(cli, ["status", "--json"]).stdout)
    assert [row["experiment"] for row in rows] == ["lr-sweep", "rank-sweep"]
    missing = runner.invoke(cli, ["status", "--experiments-dir", "nope"])
    assert missing.exit_code == 1 and "Error: nope: no such experiments folder" in missing.stderr


def test_an_experiment_with_a_pruned_run_is_counted_not_a_traceback(project: Path, runner, cli) -> None:
    """Every ASHA study has pruned trials; `lfgen status` raised KeyError: 'pruned' on them."""
    store = Store(resolve("rank-sweep").state_path)
    try:
        store.transition("rank-32", RunState.RUNNING)
        store.transition("rank-32", RunState.PRUNED, reason="pruned", detail="pruned at step 2 (eval_loss 1.5)")
    finally:
        store.close()
    assert experiments()[1]["pruned"] == 1 and experiments()[1]["pending"] == 0
    result = runner.invoke(cli, ["status"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "pruned" in result.stdout.splitlines()[2]  # the header row names the column
    line = next(line for line in result.stdout.splitlines() if "rank-sweep" in line)
    assert [cell.strip() for cell in line.strip("│ ").split("│")][:8] == ["rank-sweep", "3", "1", "1", "0", "0", "0", "1"]
    one = runner.invoke(cli, ["status", "rank-sweep", "--json"])
    assert {row["run"]: row["state"] for row in json.loads(one.stdout)}["rank-32"] == "pruned"


def test_every_state_has_a_column() -> None:
    from lfgen.training.overview import COUNTED

    assert sorted(COUNTED) == sorted(RunState) and len(COUNTED) == len(RunState)


# --- lfgen status NAME: GPU-hours used and the ETA (issue 22) ----------------------------------------------


def test_status_gives_each_run_its_eta_and_the_experiment_its_own(tmp_path: Path, monkeypatch, runner, cli) -> None:
    """A running run's ETA is its own measured pace (its trainer_log.jsonl), a pending run's its estimate on this
    machine (no nvidia-smi here: the CPU, corrected by a stored calibration), a finished run's 0; the experiment's
    lays the pending runs after the running one on its one slot."""
    import os

    from lfgen.builder.timing import time_key
    from lfgen.training.overview import experiment_eta, status

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi: this machine is its CPU
    (tmp_path / "calibration.json").write_text(json.dumps({time_key("CPU", "lora"): {"factor": 3.0, "runs": 2,
                                                                                     "startup_s": 20.0}}))
    monkeypatch.setenv("LFGEN_CALIBRATION", str(tmp_path / "calibration.json"))
    options = BuildOptions.parse(model="Qwen/Qwen2.5-0.5B-Instruct", samples=400, set={"max_steps": 40})
    make_sweep("rank", ["8", "16", "32"], options=options, name="s")
    target = resolve("s")
    store = Store(target.state_path)
    try:
        store.sync_runs(target.runs)
        store.transition("rank-8", RunState.RUNNING, event=("started", []), pgid=os.getpgrp())  # alive: this test
        store.transition("rank-32", RunState.DONE)
    finally:
        store.close()
    out = tmp_path / "outputs/s/rank-8"
    out.mkdir(parents=True)
    lines = [{"current_steps": 1, "total_steps": 40, "loss": 2.0, "elapsed_time": "0:00:03"},
             {"current_steps": 10, "total_steps": 40, "loss": 1.5, "elapsed_time": "0:01:33"}]
    (out / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = {row["run"]: row for row in status(target)}
    assert rows["rank-8"]["eta_s"] == pytest.approx(30 * 10.0)  # (93 - 3) s over 9 steps: 10 s a step, 30 left
    assert rows["rank-32"]["eta_s"] == 0.0
    from lfgen.builder.run_estimate import estimate_written, machine_placement, read_written

    written = read_written(tmp_path / "experiments/s/runs/rank-16.yaml")
    estimate = estimate_written(written, machine_placement(written))
    assert estimate.basis["calibration"]["factor"] == 3.0  # the CPU's stored correction
    assert rows["rank-16"]["eta_s"] == pytest.approx(estimate.wall_s)
    assert rows["rank-16"]["eta_s"] > 20.0  # the calibrated start-up is in it
    assert experiment_eta(list(rows.values())) == pytest.approx(300.0 + estimate.wall_s)
    assert rows["rank-8"]["gpu_hours"] > 0 and rows["rank-16"]["gpu_hours"] == 0
    shown = runner.invoke(cli, ["status", "s"])
    assert shown.exit_code == 0, shown.output
    assert "ETA" in shown.stdout and "GPU-h" in shown.stdout and "2 run(s) left, done in ~" in shown.stderr
