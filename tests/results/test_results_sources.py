"""lfgen compare of an experiment folder: the same table as of its outputs folder, with the state lfgen run
recorded, and pending rows for runs that have written nothing yet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.experiments.make import make_sweep
from lfgen.results.table import collect, compare
from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from tests.results.lf_files import Curves, decay, evals_at, write_run

RANKS = ("8", "16", "32")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """experiments/exp with three runs; rank-8 finished, rank-16 half-way, rank-32 not started."""
    monkeypatch.chdir(tmp_path)
    experiment = make_sweep("rank", list(RANKS), options=BuildOptions.parse(model="fake/model", gpu="A800"),
                            name="exp")
    runs = {run.name: run for run in experiment.manifest.runs}
    done = write_run(Path(runs["rank-8"].output_dir), Curves(decay(40), evals_at([100, 200], lambda s: 1.0 + 10 / s),
                                                             logging_steps=5), config={"lora_rank": 8, "lora_alpha": 16})
    half = write_run(Path(runs["rank-16"].output_dir), Curves(decay(20), logging_steps=5), finished=False,
                     total_steps=400, config={"lora_rank": 16, "lora_alpha": 32})
    for run_dir, name in ((done, "rank-8"), (half, "rank-16")):  # the config lfgen run trains with: the planned one
        (run_dir / "lfgen_run.yaml").write_text((experiment.path / runs[name].config).read_text())
    return tmp_path


def record(states: dict[str, dict]) -> None:
    from lfgen.training.target import resolve

    target = resolve("exp")
    store = Store(target.state_path)
    try:
        store.sync_runs(target.runs)
        for name, fields in states.items():
            store.transition(name, RunState(fields.pop("state")), **fields)
    finally:
        store.close()


def test_an_experiment_gives_the_table_of_its_outputs_folder_plus_its_pending_runs(project: Path) -> None:
    record({"rank-8": {"state": "done"}, "rank-16": {"state": "failed", "reason": "crashed"}})
    from_outputs = compare("outputs/exp")
    from_experiment = compare("experiments/exp")
    assert list(from_experiment["run"]) == ["rank-8", "rank-16", "rank-32"]
    assert list(from_experiment.columns) == list(from_outputs.columns)
    assert from_experiment.iloc[:2].drop(columns="state").equals(from_outputs.drop(columns="state"))
    assert list(from_outputs["state"]) == ["done", "running"]  # what the files say
    assert list(from_experiment["state"]) == ["done", "failed", "pending"]  # what lfgen run recorded
    pending = from_experiment.iloc[2]
    assert pending["lora_rank"] == 32 and pending["path"] == "outputs/exp/rank-32"  # from runs/rank-32.yaml
    assert pending["diagnosis"] == "no data"
    assert from_experiment.attrs["experiments"]["exp"]["best_run"] == "rank-8"


def test_without_a_state_file_the_files_say_and_none_is_created(project: Path) -> None:
    df = compare("experiments/exp/experiment.yaml")
    assert list(df["state"]) == ["done", "running", "pending"]
    assert not (project / "experiments/exp/state.sqlite").exists()


def test_a_run_whose_runner_died_is_interrupted(project: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its process group no longer exists
    record({"rank-8": {"state": "done"}, "rank-16": {"state": "running", "pid": gone.pid, "pgid": gone.pid}})
    assert list(compare("experiments/exp")["state"]) == ["done", "interrupted", "pending"]


def test_an_unreadable_state_file_is_a_note_not_a_crash(project: Path) -> None:
    (project / "experiments/exp/state.sqlite").write_bytes(b"not a database" * 100)
    comparison = collect("experiments/exp")
    assert [run.state for run in comparison.runs] == ["done", "running", "pending"]
    assert any("the run state cannot be read" in note for note in comparison.runs[0].notes)


def test_a_bad_manifest_is_one_input_error(project: Path, runner, cli) -> None:
    (project / "experiments/exp/experiment.yaml").write_text("name: [\n")
    result = runner.invoke(cli, ["compare", "experiments/exp"])
    assert result.exit_code == 1 and "experiment.yaml: not valid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
