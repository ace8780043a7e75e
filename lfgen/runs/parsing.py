"""Fast, tolerant parsing of the text LlamaFactory and transformers write into a run directory.

The speed matters: ``lfgen compare`` reads thousands of runs of thousands of lines each. So the
JSON lines are parsed with one ``json.loads`` over the lines needed (line by line only when one is
malformed), curves are sampled at evenly spaced byte offsets instead of splitting whole files, and
grad_norm is cut out of trainer_state.json without parsing the rest of it. Nothing here raises on
bad input; problems go to the caller's ``notes`` list.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VRAM = re.compile(r'"vram_(?:allocated|reserved)": ([-+0-9.eE]+)')
_NUMBERS = (int, float)
_MIN_LINE = 100  # LlamaFactory's log lines are longer than this
# Samples come in runs of consecutive logged steps: a loss that zigzags from one step to the next
# stays visible (single evenly spaced points alias it away whenever the stride is even).
BLOCK = 3
_STEP = re.compile(r'"step": (\d+)')
_ELAPSED = re.compile(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


@dataclass(slots=True)
class Series:
    """One curve: x = optimizer step, y = value; both plain lists."""

    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None


def last_record(text: str, notes: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The last complete JSON line and the text up to it; a line still being written (or cut off by a
    crash) may end the file."""
    body = text.rstrip()
    while body:
        start = body.rfind("\n") + 1
        try:
            record = json.loads(body[start:])
        except ValueError:
            if not notes or "incomplete" not in notes[-1]:
                notes.append("trainer_log.jsonl: the last line is incomplete (still being written, or cut off); "
                             "it was skipped")
            body = body[:start].rstrip()
            continue
        return (record, body) if isinstance(record, dict) else (None, body)
    return None, body


def lines_with(text: str, marker: str, max_points: int | None) -> list[str]:
    """The lines holding *marker*: all of them, or about *max_points* of them in blocks of BLOCK
    consecutive lines at evenly spaced offsets, plus the last."""
    found: list[str] = []
    # LlamaFactory's lines are over 100 characters, so a text this short has at most max_points lines.
    if max_points is None or len(text) <= max_points * _MIN_LINE:
        position = text.find(marker)
        while position >= 0:
            start, end = text.rfind("\n", 0, position) + 1, text.find("\n", position)
            end = len(text) if end < 0 else end
            found.append(text[start:end])
            position = text.find(marker, end)
        return found
    previous_end = -1
    blocks = max(2, max_points // BLOCK)
    for offset in [i * len(text) // blocks for i in range(blocks)]:
        start, taken, scanned = text.rfind("\n", 0, offset) + 1, 0, 0
        while taken < BLOCK and scanned < 4 * BLOCK and start < len(text):
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            if end > previous_end:
                previous_end, line = end, text[start:end]
                if marker in line:
                    found.append(line)
                    taken += 1
            start, scanned = end + 1, scanned + 1
    last = text.rfind(marker)  # the final loss is always kept
    if last >= 0 and last > previous_end:
        start, end = text.rfind("\n", 0, last) + 1, text.find("\n", last)
        found.append(text[start:len(text) if end < 0 else end])
    return found


def grad_norms(text: str, max_points: int) -> Series | None:
    """grad_norm per step from trainer_state.json text without json.loads (5x faster on big files).

    HF writes the file with sort_keys, so in each log_history entry "step" is the first "step" key
    after "grad_norm". Any surprise returns None and the caller parses the JSON instead.
    """
    chunks = text.split('"grad_norm": ')[1:]
    try:
        values = list(map(float, [chunk.partition(",")[0] for chunk in chunks]))
        keep = keep_indexes(values, max_points, keep_extremes=True)
    except ValueError:
        return None
    steps = [_STEP.search(chunks[i]) for i in keep]
    if not all(steps):
        return None
    return Series([float(m.group(1)) for m in steps], [values[i] for i in keep])


def loads_lines(lines: list[str], notes: list[str]) -> list[dict[str, Any]]:
    """Parse JSON lines with one json.loads over all of them; line by line only when one is bad."""
    if not lines:
        return []
    try:
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        records, bad = [], 0
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                bad += 1
        if bad:
            notes.append(f"trainer_log.jsonl: {bad} malformed line(s) skipped")
    return [r for r in records if isinstance(r, dict)]


def with_steps(records: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The records whose ``current_steps`` is a whole number; one hand-edited or corrupt line is skipped
    with a note instead of breaking the run (and every comparison it is part of)."""
    kept = [r for r in records if r.get("current_steps").__class__ is int]
    if len(kept) < len(records):
        notes.append(f"trainer_log.jsonl: {len(records) - len(kept)} line(s) whose current_steps is not a whole "
                     "number skipped")
    return kept


def last_per_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, the last written; a resumed run logs its steps again."""
    by_step: dict[Any, dict[str, Any]] = {}
    for record in records:
        by_step[record.get("current_steps")] = record
    if all(a.__class__ is int for a in by_step):
        return [by_step[step] for step in sorted(by_step)]
    return list(by_step.values())


def series_of(records: list[dict[str, Any]], key: str, step_key: str = "current_steps") -> Series:
    series = Series()
    for record in records:
        value, step = record.get(key), record.get(step_key)
        if value.__class__ in _NUMBERS and step.__class__ in _NUMBERS:  # not bool, not None, not text
            series.steps.append(float(step))
            series.values.append(float(value))
    return series


def by_step(values: dict[int, float]) -> Series:
    """A series from {step: value}; the last value logged at a step wins (the final evaluate repeats one)."""
    steps = sorted(values)
    return Series([float(s) for s in steps], [float(values[s]) for s in steps])


def keep_indexes(values: list[float], max_points: int | None, *, keep_extremes: bool = False) -> list[int]:
    """Indexes of evenly spaced blocks of BLOCK consecutive points (first and last included), the
    first zero and the NaN/Inf points (the first only when there are many), and with *keep_extremes*
    the five largest, so a spike between two samples is still seen."""
    n = len(values)
    if max_points is None or n <= max_points:
        return list(range(n))
    blocks = max(2, max_points // BLOCK)
    keep = {min(n - 1, round(b * (n - BLOCK) / (blocks - 1)) + i) for b in range(blocks) for i in range(BLOCK)}
    keep.add(n - 1)
    if not all(map(math.isfinite, values)):  # isolated NaN/Inf points, or where a run broke down
        broken = [i for i, v in enumerate(values) if not math.isfinite(v)]
        keep.update(broken if len(broken) <= 20 else broken[:1])
    if 0.0 in values:  # where the loss==0 signature of a broken run starts
        keep.add(values.index(0.0))
    if keep_extremes:
        keep.update(heapq.nlargest(5, range(n), key=values.__getitem__))
    return sorted(keep)


def thin(series: Series, max_points: int | None, *, keep_extremes: bool = False) -> Series:
    index = keep_indexes(series.values, max_points, keep_extremes=keep_extremes)
    if len(index) == len(series):
        return series
    return Series([series.steps[i] for i in index], [series.values[i] for i in index])


def peak_vram_gib(values: Iterable[Any]) -> float | None:
    """The peak of measured VRAM values (GiB), or None when none is a number above 0: LlamaFactory logs
    ``"vram_reserved": -0.0`` for a run on the CPU, which measured nothing."""
    found = [v for v in map(to_float, values) if v is not None and math.isfinite(v) and v > 0]
    return max(found) if found else None


def to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # accepts NaN, Infinity, -Infinity as HF writes them
        except ValueError:
            return None
    return None


def to_int(value: Any) -> int | None:
    number = to_float(value)
    return int(number) if number is not None and math.isfinite(number) else None


def elapsed_seconds(value: Any) -> float | None:
    """Seconds from LlamaFactory's ``str(timedelta)``: ``H:MM:SS`` or ``N days, H:MM:SS``."""
    match = _ELAPSED.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
