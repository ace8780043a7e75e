"""Reading a training run as it happens: progress and NaN (why a run failed: ``lfgen.training.failures``).

Two files are tailed by byte offset (a partial last line waits for the next read):
- ``trainer_log.jsonl``, LlamaFactory's log (steps, loss, eval_loss, ETA, measured VRAM);
- lfgen's capture of the run's console, where transformers prints ``{'loss': ..., 'grad_norm': ...}``
  at each log step: the only live source of grad_norm, needed for the "loss 0 with grad_norm NaN"
  signature of LlamaFactory issues #2916 and #8088.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.layout import TRAINER_LOG
from lfgen.runs.parsing import peak_vram_gib

_CONSOLE_LOSS = re.compile(r"'loss':\s*'?([-+\w.]+)'?")
_CONSOLE_GRAD = re.compile(r"'grad_norm':\s*'?([-+\w.]+)'?")


class _Tail:
    """New complete lines of a growing file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line.strip()]


def _number(value: Any, default: Any = None) -> Any:
    """*value* as a float (``"nan"`` and ``NaN`` included), else *default*; never raises."""
    if isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _count(value: Any, default: int) -> int:
    """A step count: a finite number, else *default*."""
    number = _number(value)
    return int(number) if number is not None and math.isfinite(number) else default


def _bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


@dataclass
class Progress:
    """What a run has logged so far."""

    step: int = 0
    total: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    eval_step: int = 0  # the step of the last eval_loss line (the tuner's pruner reports it there)
    percentage: float = 0.0
    remaining: str = ""
    vram_gib: float | None = None
    nan: str | None = None  # why the watchdog stopped the run
    tail: deque = field(default_factory=lambda: deque(maxlen=40))  # last console lines

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "total": self.total, "loss": self.loss, "eval_loss": self.eval_loss,
                "vram_gib": self.vram_gib}


class RunWatcher:
    """Follows one run's trainer_log.jsonl and console log; ``poll()`` updates ``progress``."""

    def __init__(self, output_dir: Path, console_log: Path):
        self.progress = Progress()
        self._jsonl = _Tail(output_dir / TRAINER_LOG)
        self._console = _Tail(console_log)

    def skip_existing(self) -> None:
        """Start from the files' current ends (a resumed run appends to the same files)."""
        for tail in (self._jsonl, self._console):
            try:
                tail.offset = tail.path.stat().st_size
            except FileNotFoundError:
                tail.offset = 0

    def poll(self) -> Progress:
        p = self.progress
        for line in self._jsonl.lines():
            try:
                record = json.loads(line)  # json reads NaN and Infinity, as Python's json.dumps writes them
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            # A field that is not a number (a hand-edited or foreign log, a null) keeps the last value.
            p.step = _count(record.get("current_steps"), p.step)
            p.total = _count(record.get("total_steps"), p.total)
            p.percentage = _number(record.get("percentage"), p.percentage)
            p.remaining = str(record.get("remaining_time", p.remaining))
            if "vram_reserved" in record:  # -0.0 on the CPU: no measurement; a non-number: ignored
                p.vram_gib = peak_vram_gib([p.vram_gib, record["vram_reserved"]])
            if "loss" in record:
                p.loss = _number(record["loss"], p.loss)
                if _bad(p.loss) and p.nan is None:
                    p.nan = f"loss {p.loss} at step {p.step}"
            if "eval_loss" in record:
                p.eval_loss = _number(record["eval_loss"], p.eval_loss)
                p.eval_step = p.step
                if _bad(p.eval_loss) and p.nan is None:
                    p.nan = f"eval_loss {p.eval_loss} at step {p.step}"
        for line in self._console.lines():
            p.tail.append(line)
            if p.nan is None and "'loss'" in line and "'grad_norm'" in line:
                loss = _CONSOLE_LOSS.search(line)
                grad = _CONSOLE_GRAD.search(line)
                loss_value = _number(loss.group(1)) if loss else None
                grad_value = _number(grad.group(1)) if grad else None
                if loss_value is not None and _bad(loss_value):
                    p.nan = f"loss {loss_value}"
                elif loss_value == 0.0 and grad_value is not None and math.isnan(grad_value):
                    p.nan = "loss 0 with grad_norm NaN (LlamaFactory #2916, #8088)"
        return p
