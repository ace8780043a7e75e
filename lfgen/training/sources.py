"""Where the runner's next run comes from when a slot frees: a run source.

The runner pulls work whenever a slot is free, in this order: a run to start again (an OOM retry, a run whose Ray
worker died), an evaluation left to do, the experiment's own runs to start or resume (its queue, fixed when the
runner starts), then its source's next run. ``lfgen run`` has no source: its queue is the whole experiment.
``lfgen tune`` gives its trials (lfgen.tuning.trials): each time a slot frees, Optuna is asked for the next trial,
so every slot stays busy and a pruned trial's GPU starts the next trial at once, as Optuna's own ``optimize()``
pulls a trial the moment a worker frees. A fixed batch instead leaves a slot idle until its slowest run ends.
"""

from __future__ import annotations

from typing import Protocol

from lfgen.runs.store import RunRow, Store
from lfgen.training.watch import Progress


class RunSource(Protocol):
    """Runs that are not known when the runner starts, given one at a time, and told how each ended."""

    def opened(self, store: Store) -> list[str]:
        """The state as the runner found it (runs left running by a dead runner recovered as interrupted): the runs
        the source wants evaluated before anything trains (trained under a runner that died before it scored them).
        Called once, before any work starts."""
        ...

    def next(self, store: Store) -> str | None:
        """The next run to start, added to *store* (``Store.add_run``); None when there is none now (the budget is
        spent, the time is up, or nothing more should start)."""
        ...

    def progress(self, name: str, progress: Progress) -> bool:
        """At each poll of a running run: True to stop it now (lfgen tune's pruner), recorded ``pruned``."""
        ...

    def ended(self, row: RunRow, evaluation: tuple[str, str | None] | None) -> None:
        """A run of this session has its outcome: *row* done (and evaluated, when the runner evaluates: its
        *evaluation* is (state, detail)), failed or pruned. Not called for a run interrupted or queued again."""
        ...
