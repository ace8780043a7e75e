"""A run the tuner's pruner gave up on is recorded ``pruned``, with the step and eval loss it stopped at.

The runner asks its run source at each poll of a running run (``RunSource.progress``); when the source says so
(lfgen tune's pruner), the runner stops the run's whole process group (through its guard) and ``record`` writes
the move. A pruned run is never resumed.
"""

from __future__ import annotations

from lfgen.runs.states import RunState
from lfgen.runs.store import Store
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
