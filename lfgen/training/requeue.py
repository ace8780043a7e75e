"""A run whose worker or node died (``RayHandle.lost``) is not its own fault: it goes back in the queue.

The runner calls ``lost`` when a run has ended; for a run the executor lost (its Ray worker or node
died mid-run) it records a ``lost-retry`` event, puts the run back at the head of the queue as
``pending`` and returns True. The next attempt is an ordinary one (counted in ``attempts``, started
afresh); the Ray executor names no node, so Ray starts it on a live node with the run's CPUs and GPUs
free (it waits in Ray's queue while none is). After ``MAX_LOST_RETRIES`` such retries the run fails as
``lost`` like any crash.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

MAX_LOST_RETRIES = 2  # extra attempts for a run whose worker died


def lost(runner: Any, active: Any, queue: deque) -> bool:
    """True when *active* was lost with its worker and has been requeued (its slot is free)."""
    why = getattr(active.handle, "lost", None)
    if not why or why.startswith("TaskCancelledError"):  # cancelled by lfgen (Ctrl-C, a stop): not lost
        return False
    name = active.row.name
    retries = sum(1 for _, _, kind, _ in runner.store.events(name) if kind == "lost-retry")
    if retries >= MAX_LOST_RETRIES:
        runner.store.event(name, "lost", f"{why}; after {retries} requeue(s), no more")
        return False
    runner.store.update(name, state="pending", reason="lost-retry", detail=why, pid=None, pgid=None, ended=time.time())
    runner.store.event(name, "lost-retry", {"why": why, "placed": active.handle.placed})
    runner.reporter.message(f"{name}: its Ray worker was lost ({why}); requeued on another node "
                            f"(retry {retries + 1} of {MAX_LOST_RETRIES})")
    queue.appendleft(name)
    return True
