"""The one place lfgen starts processes: ``llamafactory-cli`` runs, LlamaFactory probes, ``nvidia-smi``.

The argv and the environment are built by pure functions (tested as lists); processes start
with an argv list, never a shell, in a new session (their own process group) and, on Linux, die with
lfgen (``PR_SET_PDEATHSIG``) even after kill -9. Training runs start through the guard
(``guard.py``, ``spawn_guarded``), which stops their whole tree, torchrun's workers in their own
sessions included, when lfgen stops them or dies.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lfgen.errors import INSTALL_HINT, InputError


def find_cli(path: str | None = None) -> str:
    """``llamafactory-cli`` on PATH (or *path*), else next to this Python (a venv used without activating it)."""
    found = shutil.which("llamafactory-cli", path=path)
    if found is None:
        sibling = Path(sys.executable).parent / "llamafactory-cli"
        found = str(sibling) if os.access(sibling, os.X_OK) else None
    if found is None:
        raise InputError(f"llamafactory-cli is not installed; install it with {INSTALL_HINT}")
    return found


def train_argv(cli: str, config: str | os.PathLike[str]) -> list[str]:
    return [cli, "train", str(config)]


def predict_argv(cli: str, config: str | os.PathLike[str]) -> list[str]:
    """LlamaFactory 0.9.5 generates through ``train`` (``do_predict``); its ``eval`` command is MMLU-style only."""
    return [cli, "train", str(config)]


def export_argv(cli: str, config: str | os.PathLike[str]) -> list[str]:
    return [cli, "export", str(config)]


def train_env(base: dict[str, str], gpus: list[int] | None) -> dict[str, str]:
    """The child's environment: measured memory in trainer_log.jsonl, the GPUs it may use.

    *gpus* None leaves CUDA_VISIBLE_DEVICES as it is (LlamaFactory then uses every visible device);
    more than one GPU makes LlamaFactory launch torchrun (FORCE_TORCHRUN).
    """
    env = dict(base)
    env["RECORD_VRAM"] = "1"  # LlamaFactory writes vram_allocated/vram_reserved per log step
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        if len(gpus) > 1:
            env["FORCE_TORCHRUN"] = "1"
            env["NPROC_PER_NODE"] = str(len(gpus))
        else:
            env.pop("FORCE_TORCHRUN", None)
    return env


def _nvidia_smi(query: str) -> str:
    """nvidia-smi's CSV answer to ``--query-gpu=QUERY`` ("" without nvidia-smi or when it fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ""
    try:
        out = subprocess.run(nvidia_smi_argv(smi, query), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def nvidia_smi_argv(smi: str, query: str) -> list[str]:
    return [smi, f"--query-gpu={query}", "--format=csv,noheader"]


def visible_gpus() -> list[int]:
    """GPU indices nvidia-smi reports (none without nvidia-smi); no torch import."""
    return [int(line) for line in _nvidia_smi("index").split() if line.strip().isdigit()]


def parse_gpu_names(csv: str) -> dict[int, str]:
    """``index, name`` lines of nvidia-smi -> {index: name}; lines that are not that are skipped."""
    names = {}
    for line in csv.splitlines():
        index, sep, name = line.partition(",")
        if sep and index.strip().isdigit() and name.strip():
            names[int(index)] = name.strip()
    return names


def gpu_names(indices: list[int] | None = None) -> list[str]:
    """Names of the GPUs nvidia-smi reports (only *indices*, when given); [] without nvidia-smi."""
    names = parse_gpu_names(_nvidia_smi("index,name"))
    return [name for index, name in sorted(names.items()) if indices is None or index in indices]


def parse_gpus(spec: str, available: list[int]) -> list[int]:
    """``0,1,2`` or ``0-7`` -> indices, each one a GPU nvidia-smi reports."""
    indices: list[int] = []
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            indices += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise InputError(f"--gpus: {spec!r} is not a GPU list; write 0,1,2,3 or 0-7") from None
    missing = [i for i in indices if i not in available]
    if missing:
        seen = ", ".join(map(str, available)) if available else "none (nvidia-smi found no GPU)"
        raise InputError(f"--gpus: GPU {missing[0]} does not exist; visible GPUs: {seen}")
    if len(set(indices)) != len(indices):
        raise InputError(f"--gpus: {spec!r} names a GPU twice")
    return indices


def _die_with_parent(sig: int = signal.SIGKILL) -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


GUARD_GRACE = 8.0  # the guard's SIGTERM -> SIGKILL wait; stop_group's grace must be longer


@dataclass
class Child:
    """A started process and where its output goes; a guarded run's last console lines (``tail()``)."""

    proc: subprocess.Popen
    log_path: Path | None
    _tail: list[str] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self) -> list[str]:
        """The last console lines the guard kept in memory (read once the run has ended; [] unguarded)."""
        if self._tail is None:
            self._tail = []
            if self.proc.stdout is not None:
                try:
                    self._tail = self.proc.stdout.read().decode("utf-8", "replace").splitlines()
                except (OSError, ValueError):
                    pass
                self.proc.stdout.close()
        return self._tail


def guard_argv(argv: list[str], *, parent: int, log_path: Path, grace: float = GUARD_GRACE) -> list[str]:
    """*argv* started through lfgen's guard (``lfgen/guard.py``), in lfgen's own Python."""
    from lfgen import guard

    return [sys.executable, "-P", guard.__file__, str(parent), str(grace), str(log_path), "--", *argv]


def spawn_guarded(argv: list[str], *, cwd: str | os.PathLike[str], env: dict[str, str], log_path: Path) -> Child:
    """Start a training run through the guard: its whole tree (torchrun's workers too) stops with lfgen.

    The guard leads the run's process group, dies with lfgen (PR_SET_PDEATHSIG, SIGTERM), and tees the
    console into *log_path*, keeping the last lines for ``Child.tail()`` even when the log cannot be written.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        errors: Any = open(log_path, "ab")  # noqa: SIM115 - the guard's own errors; closed after the fork
    except OSError:
        errors = subprocess.DEVNULL
    try:
        proc = subprocess.Popen(guard_argv(argv, parent=os.getpid(), log_path=log_path), cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                start_new_session=True,
                                preexec_fn=(lambda: _die_with_parent(signal.SIGTERM)) if sys.platform == "linux"
                                else None)
    finally:
        if errors is not subprocess.DEVNULL:
            errors.close()
    return Child(proc, log_path)


def spawn(argv: list[str], *, cwd: str | os.PathLike[str], env: dict[str, str], log_path: Path | None,
          stdin: Any = subprocess.DEVNULL) -> Child:
    """Start *argv* in its own process group; stdout and stderr appended to *log_path* (or inherited)."""
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed after the fork below
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT if log
                                else None, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except FileNotFoundError:
        raise InputError(f"{argv[0]}: not found; install LlamaFactory with {INSTALL_HINT}") from None
    finally:
        if log is not None:
            log.close()
    return Child(proc, log_path)


def stop_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after *grace* seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.02)  # a run's guard usually ends within a few of these: its slot is free the sooner


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still "exists"; reap it if it is our child. The group outlives its leader while any
    # member runs (torchrun's workers, a shell's children), so look at the members once it is gone.
    try:
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == 0:
            return True
    except ChildProcessError:
        pass
    return _any_live_member(pgid)


def _any_live_member(pgid: int) -> bool:
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def run_captured(argv: list[str], *, cwd: str | os.PathLike[str], env: dict[str, str],
                 timeout: float) -> subprocess.CompletedProcess:
    """Run a short helper process to completion and capture its output (the LlamaFactory probe)."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def tensorboard_argv(logdirs: list[tuple[str, Path]], *, port: int = 6006, host: str = "127.0.0.1") -> list[str]:
    """``tensorboard --logdir_spec name:dir,... --port P --host H`` over (run name, TensorBoard dir) pairs."""
    binary = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if not Path(binary).exists():
        raise InputError(f"tensorboard is not installed; install it with {INSTALL_HINT}")
    # TensorBoard splits the spec on ',' and a name from its dir on ':'.
    spec = ",".join(f"{name.replace(',', '_').replace(':', '_')}:{Path(d).resolve()}" for name, d in logdirs)
    return [binary, "--logdir_spec", spec, "--port", str(port), "--host", host]
