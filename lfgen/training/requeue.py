"""A run whose worker or node died (``RunHandle.lost``) is not its own fault: it goes back in the queue.

When a run has ended, the runner asks ``lost``: for a run the executor lost (its Ray worker or node died
mid-run) it records the run ``pending`` with a ``lost-retry`` event and says so; the runner puts it at the head
of its queue. The next attempt is an ordinary one (counted in ``attempts``, started afresh); the Ray executor
names no node, so Ray starts it on a live node with the run's CPUs and GPUs free (it waits in Ray's queue while
none is). After ``MAX_LOST_RETRIES`` such retries the run fails as ``lost`` like any crash.
"""

from __future__ import annotations

from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from lfgen.training.executor import RunHandle

MAX_LOST_RETRIES = 2  # extra attempts for a run whose worker died


def lost(store: Store, name: str, handle: RunHandle) -> str | None:
    """The line to say when run *name* was lost with its worker and is now pending again; None when it was not
    lost (or was cancelled by lfgen: Ctrl-C, a stop) or has no retry left (then it fails like any crash)."""
    why = handle.lost
    if not why or why.startswith("TaskCancelledError"):
        return None
    retries = sum(1 for _, _, kind, _ in store.events(name) if kind == "lost-retry")
    if retries >= MAX_LOST_RETRIES:
        store.event(name, "lost", f"{why}; after {retries} requeue(s), no more")
        return None
    store.transition(name, RunState.PENDING, reason="lost-retry", detail=why,
                     event=("lost-retry", {"why": why, "placed": handle.placed}))
    return (f"{name}: its Ray worker was lost ({why}); requeued on another node "
            f"(retry {retries + 1} of {MAX_LOST_RETRIES})")
