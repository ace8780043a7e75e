"""The runner's pruning hook: a run the tuner's pruner gave up on is stopped at once and recorded ``pruned``.

``Runner(on_progress=...)`` calls the callback at each poll of a running run with its ``Progress``; when it
answers ``"prune"``, ``stop`` ends the run's whole process group (through its guard) and records the run as
``pruned`` with the step and eval loss it stopped at. A pruned run is never resumed.
"""

from __future__ import annotations

import time
from typing import Any

from lfgen.training.watch import Progress


def stop(runner: Any, active: Any, progress: Progress) -> bool:
    """Stop *active*'s process group and record it pruned; True (its slot is free)."""
    active.handle.stop()  # local or on a Ray worker: stopped and waited for
    active.handle.tail()  # read what is left of its console and close it
    name = active.row.name
    detail = f"pruned at step {progress.eval_step} (eval_loss {progress.eval_loss:.4g})" \
        if progress.eval_loss is not None else f"pruned at step {progress.step}"
    runner.store.update(name, state="pruned", reason="pruned", detail=detail, pid=None, pgid=None, ended=time.time())
    runner.store.event(name, "pruned", progress.as_dict())
    runner.reporter.finished(name, "pruned", "pruned", detail)
    return True
