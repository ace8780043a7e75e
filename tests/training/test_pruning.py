"""A run its source stops (lfgen/training/pruning.py): pruned, interrupted with the source's reason, or, when its
files show its training ended before the stop landed, done as it is. The handle here only records that it was
stopped (the process side is tests/tuning/test_tune_budget_e2e.py, real llamafactory-cli)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lfgen.layout import RESULTS_FILE, RUN_CONFIG
from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from lfgen.training import pruning
from lfgen.training.watch import Progress

WHY = "the budget is spent (0.01 of 0.01 GPU-hours, measured): stopped, resumable"


class _Handle:  # a stand-in for the RunHandle: no process here
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def tail(self) -> str:
        return ""


CONFIG = "stage: sft\nmax_steps: 4\noutput_dir: out/0\n"


@pytest.fixture
def store(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/trial-000.yaml").write_text(CONFIG)
    store = Store(tmp_path / "state.sqlite")
    store.sync_runs([("trial-000", "runs/trial-000.yaml", "out/0")])
    store.transition("trial-000", RunState.RUNNING)
    yield store
    store.close()


def _active(store):
    return SimpleNamespace(row=store.get("trial-000"), handle=_Handle())


@pytest.mark.parametrize("trained", [False, True])
def test_a_budget_stop_interrupts_unless_the_training_had_ended(store, tmp_path, trained):
    if trained:  # what LlamaFactory leaves at the end: the config it ran and a whole all_results.json
        (tmp_path / "out/0").mkdir(parents=True)
        (tmp_path / "out/0" / RUN_CONFIG).write_text(CONFIG)
        (tmp_path / "out/0" / RESULTS_FILE).write_text(json.dumps({"train_loss": 1.0}))
    active = _active(store)
    said = pruning.stop(store, active, Progress(step=4, total=4), WHY, tmp_path)
    row = store.get("trial-000")
    assert active.handle.stopped and said == (("done", None, None) if trained else ("interrupted", "budget", WHY))
    assert row.state is (RunState.DONE if trained else RunState.INTERRUPTED)
    assert store.events("trial-000")[-1][2] == ("recognised" if trained else "interrupted")


def test_a_pruned_run_stays_pruned_whatever_its_files(store, tmp_path):
    (tmp_path / "out/0").mkdir(parents=True)
    (tmp_path / "out/0" / RUN_CONFIG).write_text(CONFIG)
    (tmp_path / "out/0" / RESULTS_FILE).write_text(json.dumps({"train_loss": 1.0}))
    said = pruning.stop(store, _active(store), Progress(step=2, total=4, eval_loss=1.5, eval_step=2), True, tmp_path)
    assert said[0] == "pruned" and store.get("trial-000").state is RunState.PRUNED
