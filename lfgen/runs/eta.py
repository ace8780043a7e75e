"""How long until a run, and an experiment, is done: the one ETA computation.

A running run's ETA comes from its own measured steps (``remaining_s``: the seconds per step it has taken so far
times the steps it has left), never from an estimate; a run not started yet has only its estimate. An experiment's
ETA lays its runs onto the slots the way the runner fills them (``experiment_s``): each slot takes the next run in
queue order as soon as it frees. ``lfgen status`` (lfgen.training.overview), the time model's measured speed
(lfgen.models.throughput) and a runner's progress lines all call these two functions.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def remaining_s(steps: int | None, total_steps: int | None, elapsed_s: float | None) -> float | None:
    """Seconds a run still needs at the pace it has kept: elapsed / steps x steps left; None before its first step
    (nothing measured yet) or when the log does not say how many steps there are."""
    if not steps or total_steps is None or elapsed_s is None or steps <= 0 or elapsed_s < 0:
        return None
    return max(0, total_steps - steps) * elapsed_s / steps


def experiment_s(running: Sequence[float], pending: Sequence[float | None], slots: int) -> float | None:
    """Seconds until every run is done: *running* runs' remaining seconds hold their slots, then *pending* runs (in
    queue order, each its estimated seconds) take the first slot to free. None when a pending run has no estimate.
    *slots*: how many runs train at once (at least the runs running now)."""
    if any(p is None or not math.isfinite(p) for p in pending):
        return None
    width = max(1, slots, len(running))
    free = sorted(max(0.0, r) for r in running) + [0.0] * (width - len(running))
    heapq.heapify(free)
    for seconds in pending:
        heapq.heappush(free, heapq.heappop(free) + max(0.0, seconds))
    return max(free) if free else 0.0
