"""How lfgen shows numbers, in one place: configs, explain, tables, progress lines."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    """A value as a rule reason shows it: floats shortest (``0.0002``, ``1e-05``), the rest as str."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def short(value: float | None, digits: int = 4) -> str:
    """A measured number for a table cell: *digits* significant digits, ``-`` when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def setting(value: Any) -> str:
    """A parameter's value in a table (a trial's learning_rate, lora_dropout): floats to 4 significant digits
    (``0.0002346``, never Optuna's 16), booleans lower case, lists joined, the rest as str."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return short(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(setting, value))
    return str(value)


def count_short(value: int) -> str:
    """A parameter count the way seed 000 writes it: ``786K``, ``1.18M``, ``7.6B`` (3 significant digits)."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def duration(seconds: float | None) -> str:
    """A span of time for people: ``45s``, ``12m``, ``3h 20m``, ``2d 4h``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
