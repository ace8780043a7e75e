"""Faults that must end clean (issue 14): the whole torchrun tree dies with lfgen, SIGTERM is Ctrl-C,
a full disk is one clear failure, --rerun never follows a symlink, a done run whose results are gone
is shown missing.

Stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) where a CPU run cannot make the
fault: torchrun's workers (no GPUs here), ENOSPC at a moment the test controls; the disks are real
(a tmpfs of a few KiB, mounted here as root). The broken-checkpoint resume and one SIGTERM check train
the tiny model for real (tests/training/test_resume_e2e.py).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfgen.training import rundir
from lfgen.training.overview import status
from lfgen.training.target import resolve
from lfgen.runs.store import Store

from tests.helpers import alive, calls, experiment, modes, rows, run, running, start_lfgen, wait_for


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def _kill_all(pids: list[int]) -> None:  # the test's own cleanup, should the check fail
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM", "Ctrl-C"])
def test_torchruns_whole_tree_stops_with_lfgen(project, monkeypatch, how):
    """Stand-in: torchrun with 2 workers in sessions of their own (as torch's elastic agent starts them)."""
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="torchrun:2")
    lfgen = start_lfgen(project, "exp")
    wait_for(lambda: calls(project))
    record = calls(project)[0]
    tree = [record["pid"], *record["workers"]]
    try:
        assert all(alive(pid) for pid in tree)
        lfgen.send_signal({"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "Ctrl-C": signal.SIGINT}[how])
        lfgen.communicate(timeout=30)
        assert _gone_within(tree, 5) == [], f"left running after {how} of lfgen"
    finally:
        _kill_all(tree)


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="slow:0.2")
    lfgen = start_lfgen(project, "exp")
    wait_for(lambda: calls(project) and running("rank-8"), what="rank-8 recorded running")
    child = calls(project)[0]["pid"]
    lfgen.send_signal(signal.SIGTERM)
    _, err = lfgen.communicate(timeout=30)
    assert lfgen.returncode == 143, err
    assert "terminated (SIGTERM): the running runs were stopped and will resume" in err and "Traceback" not in err
    assert not alive(child)
    assert (rows()["rank-8"].state, rows()["rank-8"].detail) == ("interrupted", "stopped with SIGTERM")
    assert rows()["rank-16"].state == "pending"
    modes(monkeypatch)
    summary, _ = run()  # and it resumes as after Ctrl-C
    assert summary.done == ["rank-8", "rank-16"]


# --- a full disk -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk():
    """Mount a tmpfs of *size* at a folder (root only); unmounted after the test."""
    mounted = []

    def mount(folder: Path, size: str = "64k") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_llamafactorys_enospc_is_recorded_though_the_log_is_on_the_full_disk(project, monkeypatch, small_disk):
    """Stand-in: it fills the run's disk (a real tmpfs) and fails with LlamaFactory's ENOSPC lines."""
    experiment(runs=("8", "16"))
    out = small_disk(project / "outputs/exp/rank-8", "256k")
    modes(monkeypatch, rank_8="fill-disk")
    summary, recorder = run()
    row = rows()["rank-8"]
    assert (row.state, row.reason) == ("failed", "disk"), row.detail
    assert row.detail.startswith("the disk is full (No space left on device)")
    assert "[Errno 28] No space left on device" in row.detail  # from the guard's memory ...
    assert "No space left" not in (out / "lfgen_train.log").read_text()  # ... the log could not hold it
    assert summary.done == ["rank-16"]


def test_lfgens_own_files_on_a_full_disk_are_one_clear_failure(project, monkeypatch, small_disk):
    experiment(runs=("8", "16"))
    out = small_disk(project / "outputs/exp", "16k")  # the disk every run of exp trains on
    with (out / "filler").open("wb", buffering=0) as filler:  # fill it: lfgen_run.yaml cannot be written
        try:
            while True:
                filler.write(b"\0" * 1024)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    lfgen = subprocess.run([sys.executable, "-m", "lfgen", "run", "exp", "--quiet"], cwd=project,
                           capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert lfgen.returncode == 1 and "Traceback" not in lfgen.stderr, lfgen.stderr
    for name in ("rank-8", "rank-16"):  # one clear failure each, and the experiment went on to the next
        assert f"run {name} failed: could not write lfgen's files in outputs/exp/{name}: the disk is full" in lfgen.stderr
        assert (rows()[name].state, rows()[name].reason) == ("failed", "disk")
    assert calls(project) == []  # nothing was started on the full disk


# --- --rerun and symlinks -----------------------------------------------------------------------------


def test_rerun_of_a_dir_holding_symlinks_never_follows_them(project, monkeypatch):
    experiment(runs=("8",))
    run()
    precious = project / "precious"
    (precious / "inner").mkdir(parents=True)
    (precious / "inner/keep.txt").write_text("mine")
    (precious / "file.txt").write_text("mine too")
    out = project / "outputs/exp/rank-8"
    (out / "linked-dir").symlink_to(precious)
    (out / "linked-file").symlink_to(precious / "file.txt")
    (out / "sub").mkdir()
    (out / "sub/deep-link").symlink_to(precious / "inner")
    summary, _ = run(rerun=["rank-8"])
    assert summary.done == ["rank-8"] and rows()["rank-8"].attempts == 2
    assert (precious / "inner/keep.txt").read_text() == "mine" and (precious / "file.txt").read_text() == "mine too"
    assert not any(os.path.lexists(out / name) for name in ("linked-dir", "linked-file", "sub"))
    assert (out / "all_results.json").is_file() and "attempt 1" in (out / "lfgen_train.log").read_text()
    assert not list(out.parent.glob(".*lfgen-clearing*"))


def test_rerun_that_cannot_clear_records_failed_and_removes_nothing(project, monkeypatch):
    experiment(runs=("8",))
    run()
    out = project / "outputs/exp/rank-8"
    before = sorted(p.name for p in out.iterdir())

    def refuse(src, dst):  # what a read-only parent or a busy mount does to the rename that sets the dir aside
        raise PermissionError(errno.EACCES, "Permission denied", str(src))

    monkeypatch.setattr(rundir.os, "rename", refuse)
    summary, _ = run(rerun=["rank-8"])
    row = rows()["rank-8"]
    assert summary.failed == ["rank-8"] and (row.state, row.reason) == ("failed", "config")
    assert "could not prepare outputs/exp/rank-8 for the run" in row.detail and "Permission denied" in row.detail
    assert sorted(p.name for p in out.iterdir()) == before  # all or nothing: nothing


def test_clear_keeps_lfgens_log_and_marker_and_unlinks_a_linked_output_dir(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "weights.bin").write_text("w")
    link = tmp_path / "run"
    link.symlink_to(target)
    assert rundir.clear(link) is None
    assert (target / "weights.bin").read_text() == "w"  # the link's target is never touched
    assert link.is_dir() and not link.is_symlink() and list(link.iterdir()) == []


# --- a done run whose results are gone --------------------------------------------------------------


def test_a_done_run_whose_results_were_deleted_is_missing_and_retrained_on_request(project, monkeypatch, runner,
                                                                                   cli):
    import shutil

    experiment(runs=("8", "16"))
    run()
    shutil.rmtree(project / "outputs/exp/rank-8")
    (project / "outputs/exp/rank-16/all_results.json").unlink()
    table = {row["run"]: row for row in status(resolve("exp"))}
    assert table["rank-8"]["state"] == table["rank-16"]["state"] == "missing"
    assert "output dir outputs/exp/rank-8 is gone" in table["rank-8"]["reason"].replace(str(project) + "/", "")
    shown = runner.invoke(cli, ["compare", "experiments/exp", "--format", "csv"])
    assert shown.exit_code == 0, shown.output
    assert [line for line in shown.stdout.splitlines() if "rank-8" in line and "missing" in line]

    count = len(calls(project))
    summary, recorder = run()  # no flag: said, not silently skipped
    messages = [e[1] for e in recorder.events if e[0] == "message"]
    assert summary.missing == ["rank-8", "rank-16"] and len(calls(project)) == count
    assert any("rank-8 is done but" in m and "--rerun rank-8 or --retry-missing" in m for m in messages)
    result = runner.invoke(cli, ["run", "exp", "--quiet"])
    assert "2 missing (--retry-missing retrains them)" in result.stderr

    summary, _ = run(retry_missing=True)
    assert summary.done == ["rank-8", "rank-16"] and summary.missing == []
    assert all((project / f"outputs/exp/{r}/all_results.json").is_file() for r in ("rank-8", "rank-16"))
    assert rows()["rank-8"].attempts == 2
    events = Store(resolve("exp").state_path).events("rank-8")
    assert any(kind == "missing" for _, _, kind, _ in events)
