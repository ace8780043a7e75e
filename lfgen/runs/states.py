"""A run's life as a type: the states ``lfgen run`` records, the moves between them, and an evaluation's states.

The values are the strings on disk (``state.sqlite``: ``runs.state``, ``evaluations.state``), so a state file
written before these types existed reads back unchanged. Every move of a run goes through
``Store.transition`` (lfgen.runs.store), which refuses one this table does not allow.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Where a run is in its life; ``str(state)`` is its value on disk."""

    PENDING = "pending"  # not started yet, or queued to start again (an OOM or lost-worker retry, --rerun)
    RUNNING = "running"  # its process trains now (or did, when its runner was killed: recovered as interrupted)
    DONE = "done"  # trained to the end (all_results.json)
    FAILED = "failed"  # ended with a reason (oom, nan, model, hub, disk, config, crashed, lost)
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C, SIGTERM or its runner's death; resumes from its checkpoint
    PRUNED = "pruned"  # stopped early by lfgen tune's pruner; never resumed

    @property
    def finished(self) -> bool:
        """The run has an outcome: a resume leaves it alone (only --rerun or --retry-failed start it again)."""
        return self in _FINISHED


_FINISHED = frozenset({RunState.DONE, RunState.FAILED, RunState.PRUNED})

# Where each state may go. Any state may go back to pending (--rerun, --retry-failed, --retry-missing; from running
# an OOM or lost-worker retry); a run that could not start (its config, its output dir) fails from pending or
# interrupted; a pending run whose output dir holds its finished results is recognised as done.
MOVES: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.PENDING, RunState.RUNNING, RunState.FAILED, RunState.DONE}),
    RunState.RUNNING: frozenset({RunState.PENDING, RunState.DONE, RunState.FAILED, RunState.INTERRUPTED,
                                 RunState.PRUNED}),
    RunState.INTERRUPTED: frozenset({RunState.PENDING, RunState.RUNNING, RunState.FAILED}),
    RunState.DONE: frozenset({RunState.PENDING}),
    RunState.FAILED: frozenset({RunState.PENDING}),
    RunState.PRUNED: frozenset({RunState.PENDING}),
}


def allowed(current: RunState, to: RunState) -> bool:
    return to in MOVES[current]


class EvalState(StrEnum):
    """An evaluation's life (lfgen eval, run --eval, tune by an eval metric); a run without one was never evaluated."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
