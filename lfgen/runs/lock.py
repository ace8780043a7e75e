"""The flocks that keep one lfgen per experiment and one run per output dir.

The lock is an ``flock``: the kernel drops it when its holder dies, so a stale lock never blocks the next
``lfgen run``; runs still marked ``running`` then belong to a dead runner and are recovered. The holder writes
who it is into the file, for the next one's message.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from lfgen.errors import InputError

_HELD: dict[str, int] = {}  # the shared locks this process holds (absolute path -> nesting depth)


class Lock:
    """An flock on *path* (one runner per experiment, one run per output dir), naming the holder for the next one."""

    def __init__(self, path: Path, what: str, holder: str = "", verb: str = "run", share: bool = False):
        self.path, self.what, self.holder, self.verb = path, what, holder, verb
        self.share = share  # lfgen tune: its own runner (in this process) may take the lock again, nested
        self.handle = None

    def __enter__(self) -> Lock:
        key = os.path.abspath(self.path)
        if key in _HELD:  # lfgen tune holds it with share=True, and its runner takes it: nested, not refused
            _HELD[key] += 1
            self.nested = True
            return self
        self.nested = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: on a full disk the holder's line fails where it is written, never again at close.
            handle = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - held for the lock's lifetime
        except OSError as exc:
            raise InputError(f"{self.what}: cannot create its lock file {self.path} ({exc.strerror}); lfgen needs "
                             "to write in that folder (check its permissions, or choose another folder)") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode("utf-8", "replace").strip() or "another process"
            handle.close()
            raise InputError(f"{self.what} is already being {self.verb} by {holder}; wait for it, or stop it "
                             "(Ctrl-C there, or kill that pid)") from None
        doing = f"{self.holder}, " if self.holder else ""
        try:  # the holder's name is for the next one's message; the flock alone is the lock (a full disk)
            handle.seek(0)
            handle.truncate()
            handle.write(f"lfgen pid {os.getpid()} ({doing}started {time.strftime('%Y-%m-%d %H:%M:%S')})".encode())
        except OSError:
            pass
        self.handle = handle
        if self.share:
            _HELD[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        key = os.path.abspath(self.path)
        if getattr(self, "nested", False):
            _HELD[key] -= 1
            return
        if self.share:
            _HELD.pop(key, None)
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def lock_holder(path: Path) -> str | None:
    """Who holds the flock on *path* (the text its holder wrote), or None when nobody does; creates nothing."""
    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
