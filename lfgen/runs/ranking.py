"""THE best run and THE keys that vary: one ranking for compare, ``sweep --from`` and the tuner.

Which way a metric is better is the metric registry's (lfgen.runs.metrics). A value that is missing, NaN or
infinite never ranks: a run whose loss went NaN is never "best".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from lfgen.runs.metrics import judging_loss, lower_is_better

T = TypeVar("T")
# Keys that differ between any two runs by construction; a column of them says nothing.
NOT_COMPARED = frozenset({"output_dir", "logging_dir", "run_name"})


def finite(value: Any) -> float | None:
    """*value* as a float when it is a real, finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best(items: Iterable[T], value: Callable[[T], Any], metric: str) -> T | None:
    """The item whose *value* is best for *metric*; items without a finite value never win; ties keep
    the first."""
    scored = [(v, i, item) for i, item in enumerate(items) if (v := finite(value(item))) is not None]
    if not scored:
        return None
    sign = 1 if lower_is_better(metric) else -1
    return min(scored, key=lambda s: (sign * s[0], s[1]))[2]


def varying_keys(configs: Sequence[dict[str, Any]], base: dict[str, Any] | None = None,
                 ignore: frozenset[str] = NOT_COMPARED) -> list[str]:
    """The keys whose values differ between *configs* (a missing key counts as a value), in first-seen
    order. With one config and a *base*: the keys where it differs from the base."""
    keys = [k for k in dict.fromkeys(k for config in [base or {}, *configs] for k in config) if k not in ignore]
    if len(configs) == 1 and base is not None:
        return [k for k in keys if repr(base.get(k)) != repr(configs[0].get(k))]
    if len(configs) < 2:
        return []
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def disagreement(items: Sequence[tuple[str, Any]], value: Callable[[tuple[str, Any], str], Any], label: str,
                 best_by: str, best_value: float) -> str | None:
    """When the best of (name, item) *items* by *best_by* (a loss) is not the best by ROUGE-L (or accuracy),
    say so with both values; None when they agree or nothing was evaluated."""
    for metric in judging_loss():
        found = best(items, lambda item, m=metric: value(item, m), metric)
        if found is None or found[0] == label:
            continue
        mine = finite(value(next(i for i in items if i[0] == label), metric))
        if mine is not None and mine == finite(value(found, metric)):
            continue  # a tie (all 0 on an untrained model): the metric does not prefer another run
        shown = f"{mine:.4g}" if mine is not None else "none"
        return (f"best by {best_by} is {label} ({best_value:.4g}) but best by {metric} is {found[0]} "
                f"({value(found, metric):.4g}, against {shown}); loss is only a proxy: judge the answers "
                f"(sweep --from ... --metric {metric} ranks by it)")
    return None
