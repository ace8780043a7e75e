"""THE best run and THE keys that vary: one ranking for compare, ``sweep --from`` and the tuner.

Which way a metric is better is the metric registry's (lfgen.runs.metrics). A value that is missing, NaN or
infinite never ranks: a run whose loss went NaN is never "best". Compare's verdict ranks with the noise
(``with_noise``): the best is named only when it is apart from the next best beyond their errors
(lfgen.runs.uncertainty), and a score disagreeing with the loss is said only when its bootstrap interval says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lfgen.runs.metrics import judging_loss, lower_is_better
from lfgen.runs.uncertainty import Spread, apart

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


RELATIVE_FLOOR = 0.01  # without an error estimate, a gap under 1 % of the value is not called a difference


@dataclass(frozen=True)
class Ranking:
    """(name, value with its error) best first; the names within the noise of the best (the best included);
    whether the best is apart from the next best (None: no error estimate, the gap at least RELATIVE_FLOOR)."""

    order: list[tuple[str, Spread]]
    tied: list[str]
    apart: bool | None

    @property
    def best(self) -> tuple[str, Spread] | None:
        return self.order[0] if self.order else None


def _gap_is_noise(a: Spread, b: Spread) -> bool:
    """Two values are within the noise: beyond no Z errors, or (errors unknown) under RELATIVE_FLOOR apart."""
    found = apart(a, b)
    if found is not None:
        return not found
    return abs(a.value - b.value) < RELATIVE_FLOOR * max(abs(a.value), abs(b.value), 1e-12)


def with_noise(items: Sequence[tuple[str, Spread]], metric: str) -> Ranking:
    """*items* ranked for *metric*, ties within the noise of the best found."""
    kept = [(name, spread) for name, spread in items if finite(spread.value) is not None]
    sign = 1 if lower_is_better(metric) else -1
    order = [kept[i] for i in sorted(range(len(kept)), key=lambda i: (sign * kept[i][1].value, i))]
    if len(order) < 2:
        return Ranking(order, [name for name, _ in order], None)
    top = order[0][1]
    tied = [name for name, spread in order if spread is top or _gap_is_noise(top, spread)]
    separated = apart(top, order[1][1])
    if separated is None and _gap_is_noise(top, order[1][1]):
        separated = False  # no error estimate, and under RELATIVE_FLOOR apart
    return Ranking(order, tied, separated)


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
                 best_by: str, best_value: float,
                 interval: Callable[[tuple[str, Any], tuple[str, Any], str], tuple[float, float] | None] | None = None
                 ) -> str | None:
    """When the best of (name, item) *items* by *best_by* (a loss) is not the best by ROUGE-L (or accuracy),
    say so with both values; None when they agree or nothing was evaluated. *interval*: the bootstrap interval of
    (their score - mine) over the scored samples; a lead whose interval holds 0 is noise and not said."""
    for metric in judging_loss():
        found = best(items, lambda item, m=metric: value(item, m), metric)
        if found is None or found[0] == label:
            continue
        mine_item = next(i for i in items if i[0] == label)
        mine = finite(value(mine_item, metric))
        if mine is not None and mine == finite(value(found, metric)):
            continue  # a tie (all 0 on an untrained model): the metric does not prefer another run
        bounds = interval(found, mine_item, metric) if interval is not None and mine is not None else None
        if bounds is not None and bounds[0] <= 0 <= bounds[1]:
            continue  # the score's lead is within its bootstrap interval: no disagreement on this evidence
        shown = f"{mine:.4g}" if mine is not None else "none"
        spread = f"; its lead {bounds[0]:.3g}..{bounds[1]:.3g} (95 % bootstrap)" if bounds is not None else ""
        return (f"best by {best_by} is {label} ({best_value:.4g}) but best by {metric} is {found[0]} "
                f"({value(found, metric):.4g}, against {shown}{spread}); loss is only a proxy: judge the answers "
                f"(sweep --from ... --metric {metric} ranks by it)")
    return None
