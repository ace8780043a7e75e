"""lfgen.runs.store: the run table's transitions, the event log, and the one-runner lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lfgen.errors import InputError
from lfgen.runs.store import Lock, Store

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
    store.update("rank-8", state="running", attempts=1, pid=123, pgid=123, started=1.0)
    assert (store.get("rank-8").state, store.get("rank-8").pid) == ("running", 123)
    store.update("rank-8", state="failed", reason="oom", detail="out of memory", pid=None, pgid=None, ended=2.0)
    row = store.get("rank-8")
    assert (row.state, row.reason, row.detail, row.pid, row.attempts) == ("failed", "oom", "out of memory", None, 1)
    store.update("rank-8", state="pending", reason="fresh", detail=None, oom_retries=0)
    store.update("rank-8", state="done", reason=None, attempts=2)
    assert (store.get("rank-8").state, store.get("rank-8").attempts) == ("done", 2)
    assert store.get("rank-16").state == "pending"  # the other run is untouched


def test_resync_keeps_state_updates_paths_and_adds_new_runs(store):
    store.update("rank-8", state="done", attempts=1)
    store.sync_runs([("rank-16", "runs/rank-16.yaml", "outputs/y/rank-16"), RUNS[0], ("rank-32", "c", "o")])
    rows = {r.name: r for r in store.runs()}
    assert [r.name for r in store.runs()] == ["rank-16", "rank-8", "rank-32"]
    assert (rows["rank-8"].state, rows["rank-16"].output_dir, rows["rank-32"].state) == (
        "done", "outputs/y/rank-16", "pending")


def test_state_survives_reopening(store, tmp_path):
    store.update("rank-16", state="interrupted", reason="interrupted")
    store.close()
    again = Store(tmp_path / "exp" / "state.sqlite")
    try:
        assert again.get("rank-16").state == "interrupted"
    finally:
        again.close()


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
        code = ("import sys; from lfgen.runs.store import Lock\n"
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
    code = "import os, sys; from lfgen.runs.store import Lock; Lock(__import__('pathlib').Path(sys.argv[1]), 'x').__enter__(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with Lock(path, "experiment exp"):  # no stale lock: the kernel dropped it
        pass


def test_lock_in_the_same_process_is_refused(tmp_path):
    path = tmp_path / ".lock"
    with Lock(path, "experiment exp"), pytest.raises(InputError, match="already being run"):
        with Lock(path, "experiment exp"):
            pass
