"""lfgen run --ray on a 2-CPU loopback Ray cluster against plain sequential `lfgen run`, same tiny sweep.

    PYTHONPATH=. python benchmarks/bench_ray.py [--runs 4]

Builds the tiny model and a rank sweep of --runs runs (lfgen.tiny), trains it once with `lfgen run`
(one run at a time) and once with `lfgen run --ray` on a head node started here on 127.0.0.1 with 2 CPUs
(its own --temp-dir and auth token; its processes are stopped by pid at the end), and prints both walls
and the ratio. Cluster start-up is not counted; the driver's connect is.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _lfgen(cwd: Path, env: dict, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - start


def _stop(marker: str) -> None:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()
            and marker.encode() in (p / "cmdline").read_bytes()] if Path("/proc").is_dir() else []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(5)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> None:
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lfgen-bench-ray-"))
    make_model(work / "tiny-model")
    make_dataset(work / "data")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "LFGEN_RAY_WORKDIR": str(work / "workers")}
    sets = [a for key, value in CPU_SETTINGS.items() for a in ("--set", f"{key}={value}")]
    ranks = [str(4 * (i + 1)) for i in range(args.runs)]
    for name in ("local", "ray"):
        _lfgen(work, env, "sweep", "rank", *ranks, "--base", "lightweight", "--model", "./tiny-model", "--gpu", "cpu",
               "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", name, *sets)
    local = _lfgen(work, env, "run", "local", "--quiet")
    temp = tempfile.mkdtemp(prefix="lfb", dir="/tmp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        subprocess.run([str(Path(bin_dir) / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                        "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={temp}"], env=env, check=True, capture_output=True)
        ray = _lfgen(work, env, "run", "ray", "--ray", f"127.0.0.1:{port}", "--quiet")
    finally:
        _stop(temp)
    print(f"{args.runs} tiny runs: sequential lfgen run {local:.1f} s, lfgen run --ray (2 CPUs) {ray:.1f} s, "
          f"ratio {ray / local:.2f}x")


if __name__ == "__main__":
    main()
