"""lfgen.runs.store and lfgen.runs.lock: the run table's transitions, the event log, and the one-runner lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lfgen.errors import InputError, StateError
from lfgen.runs.lock import Lock
from lfgen.runs.states import MOVES, RunState
from lfgen.runs.store import Store, read_rows

RUNS = [("rank-8", "runs/rank-8.yaml", "outputs/x/rank-8"), ("rank-16", "runs/rank-16.yaml", "outputs/x/rank-16")]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "exp" / "state.sqlite")
    s.sync_runs(RUNS)
    yield s
    s.close()


def test_new_runs_are_pending_in_order(store):
    rows = store.runs()
    assert [(r.name, r.config, r.output_dir, r.state, r.attempts, r.oom_retries, r.position) for r in rows] == [
        ("rank-8", "runs/rank-8.yaml", "outputs/x/rank-8", "pending", 0, 0, 0),
        ("rank-16", "runs/rank-16.yaml", "outputs/x/rank-16", "pending", 0, 0, 1)]
    assert store.path.with_name("state.sqlite-wal").exists()  # WAL mode


def test_a_run_goes_pending_running_failed_pending_done(store):
    store.transition("rank-8", RunState.RUNNING, event=("started", {"argv": ["lf"]}), attempts=1, pid=123, pgid=123)
    row = store.get("rank-8")
    assert (row.state, row.pid, row.started is not None, row.ended) == (RunState.RUNNING, 123, True, None)
    store.transition("rank-8", RunState.FAILED, reason="oom", detail="out of memory", event=("failed:oom", "oom"))
    row = store.get("rank-8")
    assert (row.state, row.reason, row.detail, row.pid, row.pgid, row.attempts) == ("failed", "oom", "out of memory",
                                                                                   None, None, 1)
    assert row.ended >= row.started  # the end is stamped in the same transaction
    store.transition("rank-8", RunState.PENDING, reason="fresh", oom_retries=0)
    store.transition("rank-8", RunState.RUNNING, attempts=2)
    store.transition("rank-8", RunState.DONE, event=("done", {"step": 5}))
    assert (store.get("rank-8").state, store.get("rank-8").attempts) == ("done", 2)
    assert [kind for _, _, kind, _ in store.events("rank-8")] == ["started", "failed:oom", "done"]
    assert store.get("rank-16").state == "pending"  # the other run is untouched


@pytest.mark.parametrize("path, to", [
    ((), RunState.INTERRUPTED),  # pending never ran: nothing to interrupt
    ((), RunState.PRUNED),
    ((RunState.DONE,), RunState.RUNNING),  # done is done: only --rerun (pending) starts it again
    ((RunState.RUNNING, RunState.PRUNED), RunState.RUNNING),  # a pruned run never resumes
])
def test_a_move_the_table_does_not_allow_is_refused_and_writes_nothing(store, path, to):
    for state in path:
        store.transition("rank-8", state)
    before, events = store.get("rank-8"), store.events("rank-8")
    with pytest.raises(StateError, match=f"run rank-8 cannot go from {before.state} to {to}"):
        store.transition("rank-8", to, event=("x", "y"))
    assert store.get("rank-8") == before and store.events("rank-8") == events


def test_every_state_has_its_moves_and_pending_is_reachable_from_each():
    assert set(MOVES) == set(RunState)
    assert all(RunState.PENDING in moves for moves in MOVES.values())
    assert {state for state in RunState if state.finished} == {RunState.DONE, RunState.FAILED, RunState.PRUNED}


def test_resync_keeps_state_updates_paths_and_adds_new_runs(store):
    store.transition("rank-8", RunState.DONE)
    store.sync_runs([("rank-16", "runs/rank-16.yaml", "outputs/y/rank-16"), RUNS[0], ("rank-32", "c", "o")])
    rows = {r.name: r for r in store.runs()}
    assert [r.name for r in store.runs()] == ["rank-16", "rank-8", "rank-32"]
    assert (rows["rank-8"].state, rows["rank-16"].output_dir, rows["rank-32"].state) == (
        "done", "outputs/y/rank-16", "pending")
    store.add_run("trial-000", "runs/trial-000.yaml", "outputs/t/trial-000")  # lfgen tune's next trial: at the end
    store.add_run("rank-8", "runs/rank-8.yaml", "outputs/x/rank-8")  # known: its state and place kept
    assert [(r.name, r.state) for r in store.runs()] == [("rank-16", "pending"), ("rank-8", "done"),
                                                         ("rank-32", "pending"), ("trial-000", "pending")]


def test_state_survives_reopening(store, tmp_path):
    store.transition("rank-16", RunState.RUNNING)
    store.transition("rank-16", RunState.INTERRUPTED, reason="interrupted")
    store.close()
    again = Store(tmp_path / "exp" / "state.sqlite")
    try:
        assert again.get("rank-16").state is RunState.INTERRUPTED
    finally:
        again.close()


def test_a_state_lfgen_never_writes_is_a_broken_state_file(store, tmp_path):
    path = tmp_path / "exp" / "state.sqlite"
    store.db.execute("UPDATE runs SET state='paused' WHERE name='rank-8'")
    before = path.read_bytes()
    with pytest.raises(StateError, match=r"state.sqlite: not a usable lfgen run state \(its runs table holds a state "
                                         r"lfgen never writes \('paused'; lfgen writes pending, running, .*pruned\)\)"):
        Store(path)
    with pytest.raises(InputError, match="the run state cannot be read"):
        read_rows(path)
    assert path.read_bytes() == before


def test_events_are_kept_in_order_per_run(store):
    store.event("rank-8", "started", {"argv": ["lf", "train", "c.yaml"]})
    store.event("rank-16", "started", "plain text")
    store.event("rank-8", "failed:oom", "out of memory")
    assert [(e[0], e[2], e[3]) for e in store.events("rank-8")] == [
        ("rank-8", "started", '{"argv": ["lf", "train", "c.yaml"]}'), ("rank-8", "failed:oom", "out of memory")]
    assert len(store.events()) == 3


def test_get_an_unknown_run(store):
    with pytest.raises(KeyError):
        store.get("rank-64")


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = tmp_path / "exp" / ".lock"
    with Lock(path, "experiment exp"):
        code = ("import sys; from lfgen.runs.lock import Lock\n"
                "try:\n    Lock(__import__('pathlib').Path(sys.argv[1]), 'experiment exp').__enter__()\n"
                "except Exception as exc:\n    print(exc)\n")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.startswith("experiment exp is already being run by lfgen pid ")
        assert "wait for it, or stop it" in out.stdout


def test_lock_is_free_again_after_its_holder_is_done(tmp_path):
    path = tmp_path / ".lock"
    with Lock(path, "experiment exp"):
        pass
    with Lock(path, "experiment exp") as lock:
        assert "lfgen pid" in path.read_text() and lock.handle is not None


def test_lock_is_released_when_the_holder_dies(tmp_path):
    path = tmp_path / ".lock"
    code = "import os, sys; from lfgen.runs.lock import Lock; Lock(__import__('pathlib').Path(sys.argv[1]), 'x').__enter__(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with Lock(path, "experiment exp"):  # no stale lock: the kernel dropped it
        pass


def test_lock_in_the_same_process_is_refused(tmp_path):
    path = tmp_path / ".lock"
    with Lock(path, "experiment exp"), pytest.raises(InputError, match="already being run"):
        with Lock(path, "experiment exp"):
            pass
