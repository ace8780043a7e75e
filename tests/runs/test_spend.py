"""A run's GPU time from the experiment's own records (lfgen/runs/spend.py): attempts and evaluations from the
event log, its devices from lfgen_env.json, a killed runner's attempt ended at the run's last write."""

from __future__ import annotations

import json
import os

import pytest

from lfgen.runs.spend import devices, experiment_spend, read_events, run_spend, spans
from lfgen.runs.states import RunState
from lfgen.runs.store import Store


def test_attempts_and_evaluations_add_up():
    events = [(100.0, "started"), (160.0, "oom-retry"), (170.0, "started"), (300.0, "done"),
              (301.0, "eval:running"), (331.0, "eval:done"), (400.0, "placed")]
    assert spans(events, now=1000.0) == (60.0 + 130.0 + 30.0, 2, False)
    failed = [(0.0, "failed:config"), (10.0, "started"), (25.0, "failed:nan")]  # one never started, one did
    assert spans(failed, now=1000.0) == (15.0, 1, False)


def test_an_open_attempt_counts_to_now_only_while_it_runs():
    events = [(100.0, "started")]
    assert spans(events, now=400.0, alive=True) == (300.0, 1, True)
    assert spans(events, now=400.0, last_activity=250.0) == (150.0, 1, False)  # its runner died: its last write
    assert spans(events, now=400.0) == (0.0, 1, False)  # nothing says how long: nothing counted
    recovered = [(100.0, "started"), (9000.0, "recovered")]  # noticed hours later by the next lfgen run
    assert spans(recovered, now=9999.0, last_activity=300.0)[0] == 200.0


def test_devices_are_what_the_run_saw():
    assert devices({"gpus": ["A100", "A100"]}, "0") == 2
    assert devices({"gpus": []}, "0,1,2") == 3
    assert devices({}, None) == 1  # the CPU, or the one GPU LlamaFactory picked
    spend = run_spend([(0.0, "started"), (1800.0, "done")], {"gpus": ["H100"] * 4})
    assert spend.gpu_hours == pytest.approx(2.0)


def test_an_experiment_read_from_its_state(tmp_path):
    state = tmp_path / "state.sqlite"
    store = Store(state)
    store.sync_runs([("a", "runs/a.yaml", "out/a"), ("b", "runs/b.yaml", "out/b"), ("c", "runs/c.yaml", "out/c")])
    store.transition("a", RunState.RUNNING, event=("started", []), gpus="0,1")
    store.transition("a", RunState.DONE, event=("done", {}))
    store.transition("b", RunState.RUNNING, event=("started", []), pgid=2 ** 22 + 12345)  # no such process group
    store.close()
    (tmp_path / "out/a").mkdir(parents=True)
    (tmp_path / "out/a/lfgen_env.json").write_text(json.dumps({"gpus": ["A100", "A100"]}))
    (tmp_path / "out/b").mkdir(parents=True)
    log = tmp_path / "out/b/lfgen_train.log"
    log.write_text("step\n")
    found = experiment_spend(state, tmp_path, [("a", "out/a"), ("b", "out/b"), ("c", "out/c")])
    assert found["a"].devices == 2 and found["a"].attempts == 1 and not found["a"].open
    assert found["c"].wall_s == 0 and found["c"].attempts == 0
    # b's process group is gone (its runner was killed): counted to its console log's last write, not to now
    started = read_events(state)["b"][0][0]
    os.utime(log, (started + 42.0, started + 42.0))
    again = experiment_spend(state, tmp_path, [("b", "out/b")], now=started + 5000.0)
    assert again["b"].wall_s == pytest.approx(42.0, abs=0.01) and not again["b"].open
    assert experiment_spend(tmp_path / "none.sqlite", tmp_path, [("a", "out/a")])["a"].wall_s == 0
