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
