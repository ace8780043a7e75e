"""lfgen run --ray: the pure parts, bad input, and a REAL Ray cluster on loopback.

The cluster fixture (tests/training/conftest.py, one for the session) runs `ray start --head` on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, see
../shared/research/ray-optuna.md §1.1) with its own --temp-dir, and stops exactly the processes that
belong to it, by pid, even when a test fails (never `ray stop`, which would stop every cluster here).
The stand-in llamafactory-cli (fake_llamafactory_cli.py) gives the faults a CPU cannot (OOM, NaN) and
timing-controlled runs; the real-training test trains the tiny model through Ray tasks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lfgen.errors import InputError
from lfgen.training.ray_cluster import capacity, host_port, parse_address, run_gpus

from .ray_head import free_port
from tests.helpers import calls, event_kinds, experiment, modes, ray_run, rows, wait_for



# --- pure -----------------------------------------------------------------------------------------

def test_address_auto_uses_ray_address_else_a_local_instance():
    assert parse_address("auto", {}) is None
    assert parse_address(None, {"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert parse_address("auto", {"RAY_ADDRESS": "auto"}) is None
    assert parse_address("10.0.0.2:6380", {"RAY_ADDRESS": "x:1"}) == "10.0.0.2:6380"
    assert host_port("ray://head:10001") == ("head", 10001)
    assert host_port("head") == ("head", 6379)
    with pytest.raises(InputError, match="not a Ray address"):
        host_port("head:port")


def test_capacity_and_gpus_per_run():
    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 4.0}]
    assert run_gpus([{"CPU": 2.0}], 1) == 0  # a CPU-only cluster: num_gpus=0
    assert run_gpus(nodes, 2) == 2
    assert capacity(nodes, 1.0, 0) == 10 and capacity(nodes, 2.0, 2) == 2 and capacity(nodes, 4.0, 0) == 2
    with pytest.raises(InputError, match="no node of the Ray cluster has more than 4"):
        run_gpus(nodes, 8)
    with pytest.raises(InputError, match="the Ray cluster has no GPU"):
        run_gpus([{"CPU": 2.0}], 2)


def _closed_port() -> int:
    return free_port()


@pytest.mark.parametrize("address, message", [
    (f"127.0.0.1:{_closed_port()}", "Error: --ray: no Ray cluster at 127.0.0.1:"),
    ("127.0.0.1:port", "Error: --ray: '127.0.0.1:port' is not a Ray address"),
])
def test_a_bad_address_is_one_clean_error(project, runner, cli, address, message):
    experiment(runs=("8",))
    result = runner.invoke(cli, ["run", "exp", "--ray", address])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and result.output.startswith(message)
    assert calls(project) == []


@contextlib.contextmanager
def _not_ray(answer: bytes | None):
    """A loopback port that accepts connections but is not Ray: it says nothing (*answer* None), says *answer*,
    or (b"") closes at once. Yields (port, an Event set at the first connection)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted, held = threading.Event(), []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.set()
            if answer:
                conn.sendall(answer)
            if answer == b"":
                conn.close()
            else:
                held.append(conn)  # open and silent: what made ray.init wait for ever

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        thread.join(5)
        for conn in held:
            conn.close()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                                    b"SSH-2.0-OpenSSH_9.6\r\n", b""], ids=["silent", "http1", "ssh", "closes"])
def test_an_open_port_that_is_not_ray_is_one_clean_error_within_seconds(project, runner, cli, answer):  # noqa: F811
    """Issue 24: ray.init waited for ever on an open port that is not Ray; the gRPC handshake probe refuses it."""
    from lfgen.training.ray_cluster import CONNECT_TIMEOUT_S

    experiment(runs=("8",))
    with _not_ray(answer) as (port, accepted):
        started = time.monotonic()
        result = runner.invoke(cli, ["run", "exp", "--ray", f"127.0.0.1:{port}"])
        took = time.monotonic() - started
    assert accepted.is_set()
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: --ray: 127.0.0.1:{port} is open but does not answer as a Ray cluster")
    assert len(result.output.strip().splitlines()) == 1 and took < CONNECT_TIMEOUT_S + 3, (took, result.output)
    assert calls(project) == []


def test_sigterm_while_connecting_to_ray_exits_at_once_with_a_message(project):  # noqa: F811
    """Issue 24: SIGTERM while lfgen waited on the address took 23 s and said nothing."""
    experiment(runs=("8",))
    with _not_ray(None) as (port, accepted):
        lfgen = subprocess.Popen([sys.executable, "-m", "lfgen", "run", "exp", "--ray", f"127.0.0.1:{port}"],
                                 cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert accepted.wait(60), "lfgen never reached the address"
            lfgen.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            _, err = lfgen.communicate(timeout=10)
            took = time.monotonic() - sent
        finally:
            if lfgen.poll() is None:
                lfgen.kill()
                lfgen.wait()
    assert lfgen.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM) while connecting to the Ray cluster at "
                                            f"127.0.0.1:{port}; nothing was started"), err
    assert "Traceback" not in err and took < 2, took
    assert calls(project) == []


def test_with_ray_use_tls_the_probe_leaves_the_handshake_to_ray(monkeypatch):
    """A TLS cluster (Ray's RAY_USE_TLS=1) speaks TLS first: the cleartext HTTP/2 probe would refuse it."""
    from lfgen.training.ray_cluster import check_reachable

    with _not_ray(None) as (port, _):
        with pytest.raises(InputError, match="does not answer as a Ray cluster"):
            check_reachable(f"127.0.0.1:{port}", timeout=0.5)
        monkeypatch.setenv("RAY_USE_TLS", "1")
        check_reachable(f"127.0.0.1:{port}", timeout=0.5)


def test_a_host_name_idna_refuses_is_one_clean_error():
    for host in ("h" * 64 + ".example", "a..b"):
        with pytest.raises(InputError, match="is not a valid host name"):
            host_port(f"{host}:6379")
    assert host_port("[::1]:6379") == ("::1", 6379) and host_port("h" * 63 + ".example:1") == ("h" * 63 + ".example", 1)


def test_a_loopback_only_head_is_told_from_one_that_listens_on_this_machines_address():
    """The probe behind connect()'s RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (real sockets, no Ray)."""
    from lfgen.training.ray_cluster import loopback_only, own_ip

    me = own_ip()
    if ipaddress.ip_address(me).is_loopback:
        pytest.skip("this machine has no address but loopback")
    with socket.create_server(("127.0.0.1", 0)) as head:  # a head on loopback only
        port = head.getsockname()[1]
        assert loopback_only(f"127.0.0.1:{port}", me) and loopback_only(f"localhost:{port}", me)
        assert not loopback_only(f"127.0.0.1:{port}", "127.0.0.1")  # Ray would not rewrite to anything else
    with socket.create_server((me, 0)) as head:  # a head this machine's address reaches: Ray's rewrite works
        assert not loopback_only(f"127.0.0.1:{head.getsockname()[1]}", me)
    assert not loopback_only(f"{me}:{port}", me)  # not a loopback address: nothing to decide


def test_gpus_is_refused_with_ray():
    from lfgen.training.ray_executor import RayExecutor

    executor = RayExecutor.__new__(RayExecutor)  # the slot plan needs no cluster
    executor.parallel = 2
    assert executor.slots(None, 1) == [None, None]
    with pytest.raises(InputError, match="--gpus: not with --ray"):
        executor.slots([0, 1], 1)


@pytest.mark.slow
def test_oom_retry_and_nan_stop_through_ray_tasks(project, on_cluster, monkeypatch):
    address, workers = on_cluster
    experiment(runs=("8", "16"))  # A800: micro-batch 8 x accumulation 4 = 32
    modes(monkeypatch, rank_8="oom-above:2", rank_16="nan-at:3")
    summary, recorder = ray_run(address)
    assert summary.done == ["rank-8"] and summary.failed == ["rank-16"]
    state = rows()
    assert (state["rank-8"].oom_retries, state["rank-8"].attempts) == (2, 3) and state["rank-16"].reason == "nan"
    tried = [(c["micro"], c["accum"]) for c in calls(project) if "rank-8" in c["argv"][2] and "finished" not in c]
    assert tried == [(8, 4), (4, 8), (2, 16)]  # decided by the driver, effective batch kept
    assert all(str(workers) in c["argv"][2] for c in calls(project) if "argv" in c)  # trained on the worker
    home = project / "outputs/exp/rank-8"
    assert (home / "all_results.json").is_file() and (home / "lfgen_train.log").is_file()  # came home


@pytest.mark.slow
def test_ctrl_c_of_the_driver_cancels_the_task_and_stops_its_process(project, on_cluster, monkeypatch):
    address, _ = on_cluster
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="slow:0.2")
    lfgen = subprocess.Popen([sys.executable, "-m", "lfgen", "run", "exp", "--ray", address, "--quiet"], cwd=project,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_for(lambda: calls(project) and "placed" in event_kinds("rank-8"), what="rank-8 placed on its node")
        child = calls(project)[0]["pid"]
        lfgen.send_signal(signal.SIGINT)
        _, err = lfgen.communicate(timeout=60)
    finally:
        if lfgen.poll() is None:
            lfgen.kill()
    assert lfgen.returncode == 130, err
    assert "Traceback" not in err
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert (rows()["rank-8"].state, rows()["rank-8"].detail) == ("interrupted", "stopped with Ctrl-C")
    assert "attempt 1 of run rank-8" in (project / "outputs/exp/rank-8/lfgen_train.log").read_text()


@pytest.mark.slow
def test_a_driver_without_the_loopback_variable_reaches_a_loopback_head(project, on_cluster, monkeypatch):
    """Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray rewrites 127.0.0.1 to this machine's address, where a
    loopback head does not listen, and waited there for ever; lfgen sees that and stays on loopback."""
    address, _ = on_cluster
    experiment(runs=("8",))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run([sys.executable, "-m", "lfgen", "run", "exp", "--ray", address, "--quiet"], cwd=project,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert rows()["rank-8"].state == "done" and "Failed to connect to GCS" not in done.stderr


@pytest.mark.slow
def test_two_runs_train_for_real_at_once_and_compare_reads_the_copies(on_cluster, tmp_path, monkeypatch):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    address, workers = on_cluster
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    sets = [arg for key, value in CPU_SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LFGEN_RAY_ENV": ""}

    def lfgen(*args):
        return subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=tmp_path, capture_output=True, text=True,
                              env=env, timeout=600)

    sweep = lfgen("sweep", "rank", "4", "8", "--base", "lightweight", "--model", "./tiny-model", "--dataset",
                  "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny", *sets)
    assert sweep.returncode == 0, sweep.stderr
    started = time.perf_counter()
    result = lfgen("run", "tiny", "--ray", address, "--quiet")
    print(f"\nlfgen run --ray of 2 tiny runs on 2 CPUs: {time.perf_counter() - started:.1f} s wall")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny: 2 done, 0 failed" in result.stderr
    for run in ("rank-4", "rank-8"):
        home, remote = tmp_path / "outputs/tiny" / run, workers / "tiny" / run
        assert (remote / "adapter_model.safetensors").is_file()  # the adapter stays on the worker
        assert not (home / "adapter_model.safetensors").exists()
        for name in ("trainer_log.jsonl", "trainer_state.json", "all_results.json", "lfgen_run.yaml",
                     "lfgen_train.log"):
            assert (home / name).is_file(), f"{run}: {name} did not come home"
    store_rows = json.loads(lfgen("status", "tiny", "--json").stdout)
    assert [(r["run"], r["state"], r["step"]) for r in store_rows] == [("rank-4", "done", 10), ("rank-8", "done", 10)]
    compare = lfgen("compare", "outputs/tiny")
    assert compare.returncode == 0 and "rank-4" in compare.stdout and "rank-8" in compare.stdout, compare.stderr
    from lfgen.runs.store import Store

    store = Store(tmp_path / "experiments/tiny/state.sqlite")
    try:
        placed = [json.loads(message) for _, _, kind, message in store.events("rank-4") if kind == "placed"]
        starts = sorted((r.started, r.ended) for r in store.runs())
    finally:
        store.close()
    assert placed and placed[0]["node"] == "127.0.0.1" and placed[0]["path"] == str(workers / "tiny/rank-4")
    assert starts[1][0] < starts[0][1]  # the two runs overlapped in time


@pytest.mark.slow
def test_a_two_trial_tune_runs_its_trials_as_ray_tasks(project, on_cluster, runner, cli):
    """lfgen tune --ray with the stand-in llamafactory-cli (fast and CPU-light; the real study is
    tests/tuning/test_tune_e2e.py, the real Ray training the test above): both trials train on the worker."""
    pytest.importorskip("optuna")
    address, workers = on_cluster
    (project / "space.yaml").write_text("lora_rank: {choices: [8, 16]}\nlearning_rate: {low: 1.0e-4, high: 5.0e-4}\n")
    result = runner.invoke(cli, ["tune", "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
                                 "--space", "space.yaml", "--trials", "2", "--pruner", "none", "--ray", address])
    assert result.exit_code == 0, result.output
    assert "Ray at 127.0.0.1" in result.output and "best: trial-00" in result.output
    from lfgen.runs.study import load_rows

    assert [row["state"] for row in load_rows(project / "experiments/t")] == ["complete", "complete"]
    trained = [c["argv"][2] for c in calls(project) if "argv" in c and "finished" not in c]
    assert len(trained) == 2 and all(str(workers / "t") in path for path in trained)  # on the worker, as tasks
    assert (project / "outputs/t/trial-000/all_results.json").is_file()  # came home



def _ray_worker_of(pid: int) -> int | None:
    """The Ray worker process a run's process descends from (its task's worker)."""
    while pid > 1:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"default_worker.py" in cmdline or cmdline.startswith(b"ray::"):
                return pid
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


@pytest.mark.slow
def test_a_run_whose_ray_worker_dies_is_requeued_and_finishes(project, on_cluster, monkeypatch):
    """Focused (the stand-in CLI, slow steps so the kill lands mid-run): the Ray worker process running the run's
    task is killed with -9 by its pid, its node stays up; the run is requeued (lost-retry), trains again on the
    same node, finishes, attempts == 2. A whole node dying, with the retry on another node and real training, is
    test_ray_faults_e2e.py::test_a_run_on_a_worker_node_that_dies_is_requeued_on_the_head_and_finishes."""
    import threading

    address, _ = on_cluster
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="slow:0.05")
    killed: list[int] = []

    def kill_the_worker():
        wait_for(lambda: calls(project) and "placed" in event_kinds("rank-8"), what="rank-8 placed on its node")
        worker = wait_for(lambda: _ray_worker_of(calls(project)[0]["pid"]), timeout=20, what="its Ray worker")
        if worker is not None:
            killed.append(worker)
            os.kill(worker, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    try:
        summary, recorder = ray_run(address)
    finally:
        killer.join(timeout=70)
    assert killed, "the run's Ray worker was not found"
    assert summary.done == ["rank-8"], rows()["rank-8"]
    assert rows()["rank-8"].attempts == 2
    from lfgen.runs.store import Store

    store = Store(project / "experiments/exp/state.sqlite")
    try:
        kinds = [kind for _, _, kind, _ in store.events("rank-8")]
    finally:
        store.close()
    assert kinds.count("lost-retry") == 1 and kinds.count("placed") == 2
