"""Fixtures the Ray tests share: ONE loopback Ray head for the whole session.

One head, not one per test module: Ray reads its auth token once per process, so a second head with a token
of its own refuses the test process's ``ray.init`` ("Failed to connect to Ray cluster"), which the Ray test
modules run in-process. The head's processes (found by its temp dir and its process group) are stopped by pid at the
end of the session, even after a failure (never ``ray stop``, which would stop every cluster on the machine).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile

import pytest

from .ray_head import RAY_BIN, free_port, groups_of, node_pids, stop_pids


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs; yields (address, workers' folder, token); its processes stopped by pid."""
    if not RAY_BIN.exists():
        pytest.skip("ray is not installed (pip install -e '.[ray]'); CI installs it")
    temp = tempfile.mkdtemp(prefix="lfr", dir="/tmp")  # short: Ray's socket paths have a length limit
    workers = tmp_path_factory.mktemp("ray-workers")
    port = free_port()
    token = secrets.token_hex(32)  # its own token: ~/.ray/auth_token is shared by every cluster on this machine
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "LFGEN_RAY_WORKDIR": str(workers),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "HF_HUB_OFFLINE": "1", "PATH": f"{RAY_BIN.parent}{os.pathsep}{os.environ['PATH']}"}
    start = subprocess.run([str(RAY_BIN), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=120,
                           start_new_session=True)  # the head's processes in a group of their own (groups_of)
    groups: set[int] = set()
    try:
        assert start.returncode == 0, start.stderr
        groups = groups_of(temp)  # the head's own process group: its processes that do not name the temp dir too
        yield f"127.0.0.1:{port}", workers, token
    finally:
        stop_pids(node_pids(temp, groups))


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    address, workers, token = cluster
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.setenv("LFGEN_RAY_ENV", "PATH,FAKE_LF_MODES,FAKE_LF_RECORD")
    return address, workers
