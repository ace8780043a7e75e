"""A run its source stops early: pruned (the tuner's pruner gave up on it: the step and eval loss it stopped at), or
interrupted with a reason (lfgen tune's --budget is spent: it resumes from its checkpoint when the study goes on).

The runner asks its run source at each poll of a running run (``RunSource.progress``); when the source says so,
``stop`` stops the run's whole process group (through its guard) and writes the move. A pruned run is never resumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from lfgen.training.outputs import trained
from lfgen.training.watch import Progress


def detail(progress: Progress) -> str:
    """Where the run stopped: its last eval step and loss (what the pruner judged), else its step."""
    if progress.eval_loss is not None:
        return f"pruned at step {progress.eval_step} (eval_loss {progress.eval_loss:.4g})"
    return f"pruned at step {progress.step}"


def record(store: Store, name: str, progress: Progress) -> str:
    """Record run *name* pruned (its process already stopped); the detail, for the reporter."""
    why = detail(progress)
    store.transition(name, RunState.PRUNED, reason="pruned", detail=why, event=("pruned", progress.as_dict()))
    return why


def stop(store: Store, active: Any, progress: Progress, verdict: bool | str,
         root: Path) -> tuple[str, str | None, str | None]:
    """Stop the runner's *active* run (its row and RunHandle) as its source said: *verdict* True prunes it, a text
    interrupts it with that reason, resumable; one whose files under *root* show its training ended before the stop
    landed is done, as it is. (state, reason, detail) for the reporter."""
    name = active.row.name
    active.handle.stop()  # local or on a Ray worker: stopped and waited for
    active.handle.tail()  # read what is left of its console and close it
    if verdict is True:
        return "pruned", "pruned", record(store, name, progress)
    if trained(root, active.row):  # a budget stop measured at the last evaluation can land after LF wrote its results
        store.transition(name, RunState.DONE, event=("recognised", f"finished as the stop came ({verdict})"))
        return "done", None, None
    store.transition(name, RunState.INTERRUPTED, reason="budget", detail=str(verdict),
                     event=("interrupted", str(verdict)))
    return "interrupted", "budget", str(verdict)
