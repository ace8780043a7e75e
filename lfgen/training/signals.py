"""SIGTERM (a scheduler, ``docker stop``, ``kill``) handled as Ctrl-C is: ``Terminated`` is raised in the
main thread, the runner stops its runs and records them interrupted, and ``lfgen run`` exits 143."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """lfgen got SIGTERM: stop like Ctrl-C, exit 143 (128 + 15)."""

    exit_code = 128 + signal.SIGTERM


def _raise(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # one stop at a time: a second SIGTERM does not cut it short
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` (the main thread only; elsewhere nothing changes)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
