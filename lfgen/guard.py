"""The guard every training run starts through: the run's whole process tree dies with lfgen.

``python -P guard.py PARENT_PID GRACE LOG -- ARGV...`` (built by ``launch.guard_argv``; stdlib only, so
it starts fast and imports nothing of lfgen). It is the leader of the run's process group and:

- dies with lfgen: ``PR_SET_PDEATHSIG`` = SIGTERM (set by ``launch.spawn`` before exec; checked here
  against PARENT_PID for the race where lfgen died first);
- is a child subreaper (``PR_SET_CHILD_SUBREAPER``): processes its tree leaves behind (torchrun's
  workers, which torch starts in sessions of their own) are reparented to it, not to init, so it can
  always find every descendant under /proc;
- on SIGTERM, SIGINT or SIGHUP (or lfgen's death) and when the command ends, it sends SIGTERM to every
  descendant, SIGKILL after GRACE seconds, reaps them all and exits with the command's status
  (128 + signal when it was killed);
- tees the command's stdout and stderr into LOG and keeps the last lines in memory: when a write to
  LOG fails (a full disk), the run goes on, and the last lines are written to the guard's stdout at
  the end (a pipe lfgen reads), so lfgen learns the cause even when the log could not hold it.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
TAIL_LINES, TAIL_BYTES = 200, 48_000  # under a pipe's 64 KiB: written at exit without a reader waiting


class _Stop(Exception):
    pass


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to *root* (zombies included: they are reaped)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_tree(grace: float) -> None:
    """SIGTERM every descendant, SIGKILL what is left after *grace* seconds, reap them all."""
    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in descendants(me):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            if not descendants(me):
                return
            time.sleep(0.05)
    _reap()


def _on_signal(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def main(args: list[str]) -> int:
    parent, grace, log_path, sep, *argv = args
    if sep != "--" or not argv:
        os.write(2, b"usage: guard.py PARENT_PID GRACE LOG -- ARGV...\n")
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # again, in case spawn's preexec could not
    if os.getppid() != int(parent):  # lfgen died before PR_SET_PDEATHSIG took hold
        return 128 + signal.SIGTERM
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    log_failed: OSError | None = None
    code = 0
    try:
        log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - held until the command ends
    except OSError as exc:
        log, log_failed = None, exc
    proc = None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        partial = b""
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            if log is not None:
                try:
                    log.write(chunk)
                except OSError as exc:  # a full disk: the run goes on, the tail is kept here
                    log_failed = log_failed or exc
            *lines, partial = (partial + chunk).split(b"\n")
            tail.extend(line[-500:] for line in lines)
            partial = partial[-4000:]
        if partial:
            tail.append(partial[-500:])
        code = proc.wait()
        code = 128 - code if code < 0 else code
    except _Stop as stop:
        code = 128 + int(stop.args[0])
    except FileNotFoundError as exc:
        os.write(2, f"lfgen guard: {exc}\n".encode())
        code = 127
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop_tree(float(grace))
        if proc is not None and proc.returncode is None:
            proc.returncode = -1
    if log_failed is not None:
        tail.append(f"lfgen: the console log could not be written ({log_failed})".encode())
    text = b"\n".join(tail)[-TAIL_BYTES:]
    try:
        os.write(1, text + b"\n")
    except OSError:  # lfgen is gone (a broken pipe): nothing to tell
        pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
