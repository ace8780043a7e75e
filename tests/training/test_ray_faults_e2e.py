"""lfgen run --ray when things die, for real: real Ray on loopback, real `llamafactory-cli train` of the tiny model.

- Two live Ray nodes on 127.0.0.1 (ray_two_nodes.py: Ray's own ``ray.cluster_utils.Cluster`` in a helper
  process, with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; ``ray start`` refuses a second loopback node,
  ../shared/research/ray-optuna.md §5), each with 1 CPU and a folder of its own for the runs it trains.
  Two runs of 1 CPU each fill both nodes, so one trains on the worker node; the test kills that node
  (``remove_node``: its raylet and workers get SIGKILL) while the run trains. The run is requeued, trains
  again on the head and finishes there, attempt 2; status and compare read it.
- A driver killed with -9 between runs: the running task's llamafactory-cli dies with it (Ray's ownership,
  then the guard's PR_SET_PDEATHSIG), and the next `lfgen run --ray` finishes the rest without touching the
  run that had finished.

The driver (`lfgen run EXP --ray 127.0.0.1:PORT`) is a subprocess, as a user runs it; every Ray process a test
starts is stopped when it ends, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import needs_llamafactory
from tests.helpers import lfgen
from .ray_head import RAY_BIN, groups_of, node_pids, pids_of, stop_pids  # the one-node `cluster` fixture is conftest's

pytestmark = [pytest.mark.slow, needs_llamafactory]


def _events(project: Path, experiment: str) -> list[tuple[str, str, dict | str]]:
    """(run, kind, message) of every event so far, read only (the driver is writing the state meanwhile)."""
    path = project / "experiments" / experiment / "state.sqlite"
    if not path.is_file():
        return []
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT run, kind, message FROM events ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the tables are not made yet
        return []
    finally:
        db.close()
    out = []
    for run, kind, message in rows:
        try:
            out.append((run, kind, json.loads(message)))
        except ValueError:
            out.append((run, kind, message))
    return out


def _logged(out: Path) -> list[int]:
    """The steps the run at *out* has logged, in order (a resumed run's log holds both attempts)."""
    try:
        text = (out / "trainer_log.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(line)["current_steps"] for line in text.splitlines() if '"loss"' in line]


def _trainer_in(out: Path) -> list[int]:
    """The llamafactory-cli processes training into *out* (not lfgen's guard above them)."""
    found = []
    for pid in pids_of(str(out)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"llamafactory-cli") for arg in argv) and not any(b"guard.py" in arg for arg in argv):
            found.append(pid)
    return found


def _gone(out: Path, timeout: float) -> None:
    """Every process that names *out* ends within *timeout* (no orphan keeps training)."""
    start = time.monotonic()
    while pids_of(str(out)) and time.monotonic() - start < timeout:
        time.sleep(0.1)
    assert pids_of(str(out)) == [], f"processes outlived their Ray task: {pids_of(str(out))}"
    print(f"\nthe run's processes in {out.name} were gone {time.monotonic() - start:.1f} s after the kill")


def _sweep(project: Path, name: str, ranks: tuple[str, ...], **settings) -> None:
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    make_model(project / "tiny-model")
    make_dataset(project / "data")
    sets = [arg for key, value in {**CPU_SETTINGS, **settings}.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(project, "sweep", "rank", *ranks, "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", name,
                  *sets)
    assert sweep.returncode == 0, sweep.stderr


def _driver(project: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`lfgen run ... --ray` in the background; its stderr goes to a file (a pipe nobody reads would block it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray turns 127.0.0.1 into eth0's address and never connects
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    err = project / f"driver-{time.monotonic_ns()}.err"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "lfgen", "run", *args, "--quiet"], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, err


def _wait(what: str, check, proc: subprocess.Popen, err: Path, timeout: float = 150.0):
    """Poll *check* until it returns something truthy; fail early if the driver ended."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"the driver ended (rc {proc.returncode}) before {what}: {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --- two nodes: the worker node dies mid-run --------------------------------------------------------

NODE_STEPS = 60  # the kill lands after 3 of them


class TwoNodes:
    """The two-node cluster of ray_two_nodes.py, run by the test: its address, node ids and folders."""

    def __init__(self, proc: subprocess.Popen, info: dict, folders: dict[str, Path]):
        self.proc, self.address, self.head, self.worker = proc, info["address"], info["head"], info["worker"]
        self.folders = folders

    def kill_worker(self) -> None:
        self.proc.stdin.write("kill-worker\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "killed"


@pytest.fixture
def two_nodes(tmp_path):
    """A head and a worker node on 127.0.0.1, 1 CPU each, each training in its own folder; all stopped at the end."""
    if not RAY_BIN.exists():
        pytest.skip("ray is not installed (pip install -e '.[ray]'); CI installs it")
    temp = tempfile.mkdtemp(prefix="lfn", dir="/tmp")  # short: Ray's socket paths have a length limit
    folders = {"head": tmp_path / "head-node", "worker": tmp_path / "worker-node"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no address, auth or temp dir of others'
    env.update(RAY_TMPDIR=temp, HF_HUB_OFFLINE="1",  # RAY_TMPDIR: its sessions and address file, not /tmp/ray
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ray_two_nodes.py")),
                             str(folders["head"]), str(folders["worker"])], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its nodes' processes in a group of their own (groups_of)
    groups: set[int] = set()
    try:
        line = proc.stdout.readline()
        assert line.startswith("{"), f"the two Ray nodes did not start (rc {proc.poll()})"
        groups = groups_of(temp)  # each node's process group: its processes that do not name the temp dir too
        yield TwoNodes(proc, json.loads(line), folders)
    finally:
        proc.stdin.close()  # it shuts its nodes down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_pids(node_pids(temp, groups))  # whatever the shutdown left
        shutil.rmtree(temp, ignore_errors=True)


def test_a_run_on_a_worker_node_that_dies_is_requeued_on_the_head_and_finishes(tmp_path, two_nodes):
    nodes, folders = two_nodes, two_nodes.folders
    project = tmp_path
    _sweep(project, "nodes", ("4", "8"), max_steps=NODE_STEPS, save_steps=20, eval_steps=NODE_STEPS)
    started = time.perf_counter()
    proc, err = _driver(project, "nodes", "--ray", nodes.address)
    try:
        def on_the_worker():
            return next(((run, placed) for run, kind, placed in _events(project, "nodes")
                         if kind == "placed" and placed["node_id"] == nodes.worker), None)

        run, placed = _wait("a run placed on the worker node", on_the_worker, proc, err)
        remote = Path(placed["path"])
        assert remote == folders["worker"] / "nodes" / run
        _wait(f"{run} training on the worker", lambda: len(_logged(remote)) >= 3, proc, err)
        assert not (remote / "all_results.json").exists(), "it finished before the kill; raise max_steps"
        assert _trainer_in(remote)
        nodes.kill_worker()  # the node dies: its raylet and workers get SIGKILL
        _gone(remote, 20)  # its llamafactory-cli died with the node's Ray worker
        proc.wait(timeout=150)
    finally:
        _end(proc)
    print(f"\n2 runs, one requeued after its node died: {time.perf_counter() - started:.1f} s wall")
    stderr = err.read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{run}: its Ray worker was lost" in stderr and "nodes: 2 done, 0 failed" in stderr
    events = [(kind, message) for name, kind, message in _events(project, "nodes") if name == run]
    kinds = [kind for kind, _ in events]
    assert kinds.count("lost-retry") == 1 and kinds.count("placed") == 2 and kinds[-1] == "done", kinds
    second = [message for kind, message in events if kind == "placed"][1]
    assert second["node_id"] == nodes.head  # trained again on the other node, the head
    assert Path(second["path"]) == folders["head"] / "nodes" / run
    again = Path(second["path"])
    assert (again / "adapter_model.safetensors").is_file()
    assert _logged(again) == list(range(1, NODE_STEPS + 1))  # afresh there: the head's folder had nothing of attempt 1
    status = {r["run"]: r for r in json.loads(lfgen(project, "status", "nodes", "--json").stdout)}
    assert {name: (r["state"], r["step"]) for name, r in status.items()} == {"rank-4": ("done", NODE_STEPS),
                                                                            "rank-8": ("done", NODE_STEPS)}
    assert status[run]["attempts"] == 2, status[run]
    home = project / "outputs/nodes" / run
    assert json.loads((home / "all_results.json").read_text())["epoch"] > 0  # the head's results came home
    compare = lfgen(project, "compare", "outputs/nodes")
    assert compare.returncode == 0 and "rank-4" in compare.stdout and "rank-8" in compare.stdout, compare.stderr


# --- one node: the driver is killed with -9 between runs ----------------------------------------------

STEPS, SAVE = 30, 5  # each run's steps; rank-8 is killed after its first checkpoint, 25 steps before its end


def test_a_driver_killed_with_9_mid_experiment_leaves_no_run_behind_and_the_next_one_finishes_the_rest(
        tmp_path, cluster, monkeypatch):
    from lfgen.training.rundir import broken

    address, workers, token = cluster
    for name, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                        "LFGEN_RAY_ENV": ""}.items():  # for the drivers: this one and `lfgen run` after it
        monkeypatch.setenv(name, value)
    project = tmp_path
    _sweep(project, "killed", ("4", "8", "16"), max_steps=STEPS, save_steps=SAVE, eval_steps=STEPS)
    first, second = workers / "killed/rank-4", workers / "killed/rank-8"
    # 2 CPUs a run on the 2-CPU node: one run at a time, in order, so rank-4 is done while rank-8 trains
    proc, err = _driver(project, "killed", "--ray", address, "--cpus-per-run", "2")
    clock = time.perf_counter()
    try:
        _wait("rank-4 done", lambda: any(r == "rank-4" and k == "done" for r, k, _ in _events(project, "killed")),
              proc, err)
        checkpoint = second / f"checkpoint-{SAVE}"
        _wait("rank-8's first whole checkpoint", lambda: checkpoint.is_dir() and broken(checkpoint) is None, proc, err)
        assert not (second / "all_results.json").exists(), "rank-8 finished before the kill; raise max_steps"
        assert _trainer_in(second)  # rank-8's llamafactory-cli trains as the driver dies
        kept = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (
            project / "outputs/killed/rank-4/all_results.json", project / "outputs/killed/rank-4/trainer_log.jsonl",
            first / "adapter_model.safetensors", first / "trainer_log.jsonl")}
        print(f"\nthe driver, until the kill: {time.perf_counter() - clock:.1f} s wall")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _gone(second, 30)  # Ray ended the dead driver's task, and the guard the run's tree with it
    finally:
        _end(proc)
    assert {r["run"]: r["state"] for r in json.loads(lfgen(project, "status", "killed", "--json").stdout)} == {
        "rank-4": "done", "rank-8": "running", "rank-16": "pending"}  # as the driver left it
    started = time.perf_counter()
    result = lfgen(project, "run", "killed", "--ray", address, "--quiet")  # 1 CPU a run: the last two at once
    print(f"\nlfgen run --ray after kill -9: {time.perf_counter() - started:.1f} s wall")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank-8: its last runner" in result.stderr and "killed: 3 done, 0 failed" in result.stderr
    for path, (mtime, data) in kept.items():  # the finished run: not retrained, not rewritten, not copied home again
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), f"{path} changed"
    status = {r["run"]: r for r in json.loads(lfgen(project, "status", "killed", "--json").stdout)}
    assert {name: (r["state"], r["step"], r["attempts"]) for name, r in status.items()} == {
        "rank-4": ("done", STEPS, 1), "rank-8": ("done", STEPS, 2), "rank-16": ("done", STEPS, 1)}
    kinds = [kind for run, kind, _ in _events(project, "killed") if run == "rank-4"]
    assert kinds.count("started") == 1
    resumed = yaml.safe_load((second / "lfgen_run.yaml").read_text())["resume_from_checkpoint"]
    at = int(Path(resumed).name.split("-")[1])
    assert Path(resumed).parent == second and at >= SAVE  # rank-8 went on from its checkpoint on the worker
    logged = _logged(second)
    before, after = logged[:len(logged) - (STEPS - at)], logged[len(logged) - (STEPS - at):]
    assert after == list(range(at + 1, STEPS + 1))  # attempt 2 logged the steps after the checkpoint
    assert before[:at] == list(range(1, at + 1))  # after attempt 1's own
    home = project / "outputs/killed/rank-8"
    assert (home / "all_results.json").is_file() and (home / "trainer_log.jsonl").read_bytes() == (
        second / "trainer_log.jsonl").read_bytes()  # the resumed run's files came home
