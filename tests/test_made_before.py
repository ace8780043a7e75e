"""An experiment made before the runs/ layer (by main at abab2dd: tests/fixtures/made_before/README.md) reads and
resumes with today's code: the same state.sqlite, study.db, manifest and run folders. The stand-in llamafactory-cli
trains what is left (ONLY timing; what is checked is which runs are resumed and which are left alone)."""

from __future__ import annotations

import json
import shutil

import pytest

from lfgen.runs.states import RunState
from tests.helpers import Recorder, calls, rows, run

from .conftest import FIXTURES

MADE_BEFORE = FIXTURES / "made_before"


@pytest.fixture
def old_project(project):
    for name in ("experiments", "outputs"):
        shutil.copytree(MADE_BEFORE / name, project / name)
    shutil.copy(MADE_BEFORE / "space.yaml", project / "space.yaml")
    return project


def test_status_reads_it(old_project, runner, cli):
    result = runner.invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    counts = {row["experiment"]: row for row in json.loads(result.stdout)}
    assert {k: counts["old-sweep"][k] for k in ("done", "failed", "interrupted", "pending")} == {
        "done": 1, "failed": 1, "interrupted": 1, "pending": 1}
    assert (counts["old-tune"]["done"], counts["old-tune"]["interrupted"]) == (2, 1)  # its runner is gone
    one = {row["run"]: row["state"] for row in json.loads(runner.invoke(cli, ["status", "old-tune", "--json"]).stdout)}
    assert one == {"trial-000": "done", "trial-001": "done", "trial-002": "interrupted?"}


def test_a_sweep_resumes_its_interrupted_and_pending_runs_and_leaves_the_rest(old_project):
    before = {name: (old_project / f"outputs/old-sweep/{name}/all_results.json") for name in ("rank-8",)}
    kept = {name: path.read_bytes() for name, path in before.items()}
    summary, _ = run("old-sweep")
    assert (summary.done, summary.failed) == (["rank-8", "rank-32", "rank-64"], ["rank-16"])
    trained = [c["argv"][2].split("/")[-2] for c in calls(old_project) if "finished" not in c]
    assert trained == ["rank-32", "rank-64"]  # the done run is not trained again, the failed one not retried
    state = rows("old-sweep")
    assert (state["rank-8"].attempts, state["rank-32"].attempts, state["rank-16"].state) == (1, 2, RunState.FAILED)
    assert {name: path.read_bytes() for name, path in before.items()} == kept


def test_a_study_resumes_its_killed_trial_and_ends_with_all_its_trials(old_project):
    from lfgen.runs.study import load_rows
    from lfgen.tuning.tuner import tune

    said: list[str] = []
    result = tune("old-tune", reporter=Recorder(), say=said.append)
    assert "1 trial(s) were running when the last lfgen tune stopped: trial-002" in said[0]
    assert [(row["run"], row["state"]) for row in result.rows] == [(f"trial-{n:03d}", "complete") for n in range(4)]
    trained = [c["argv"][2].split("/")[-2] for c in calls(old_project) if "finished" not in c]
    assert trained == ["trial-002", "trial-003"]  # the complete trials are not trained again
    assert rows("old-tune")["trial-002"].attempts == 2 and len(load_rows(old_project / "experiments/old-tune")) == 4
    assert (old_project / "experiments/old-tune/best.yaml").is_file()
