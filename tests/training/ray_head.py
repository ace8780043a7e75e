"""Helpers for the Ray tests' clusters: the ray binary, a free loopback port, processes found and stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

RAY_BIN = Path(sys.executable).parent / "ray"


def free_port() -> int:
    """A loopback port nothing listens at (just closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes(match: Callable[[int, Path], bool]) -> list[int]:
    """Processes for which *match(pid, its /proc entry)* holds, this one excluded (one that ends meanwhile is not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if match(int(entry.name), entry):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def pids_of(marker: str) -> list[int]:
    """Processes whose command line holds *marker* (a cluster's own --temp-dir), this one excluded."""
    return _processes(lambda _, entry: marker.encode() in (entry / "cmdline").read_bytes())


def groups_of(marker: str) -> set[int]:
    """The process groups of the processes *marker* finds, this process's own left out. `ray start` puts every
    process of a node in one group of its own, and some of them never name the temp dir: the Ray client server, and
    ray::DashboardAgent and ray::RuntimeEnvAgent, which rewrite their command line. Take the groups while the node
    runs; node_pids(marker, groups) then finds them all."""
    groups = set()
    for pid in pids_of(marker):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    return groups - {os.getpgrp()}


def node_pids(marker: str, groups: set[int]) -> list[int]:
    """Every process of the Ray nodes started with temp dir *marker*: by their command line or their *groups*."""
    return _processes(lambda pid, entry: marker.encode() in (entry / "cmdline").read_bytes()
                      or os.getpgid(pid) in groups)


def stop_pids(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL after 10 s, each of *pids*; reaped where they are this process's children."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            for pid in pids:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.1)
