"""A finished (or running) run's measured speed, from the files LlamaFactory writes into its output dir.

The counterpart of the time model: what later estimates are corrected with (calibrate), what an ETA is
projected from (status), what a report's GPU-hours are (compare). Sources, best first:

* ``all_results.json`` (written when training ends): ``train_runtime`` (s), ``train_steps_per_second``,
  ``train_samples_per_second``, ``effective_tokens_per_sec`` (LlamaFactory's real tokens per second per
  GPU, with ``include_effective_tokens_per_second``) and ``epoch``;
* ``trainer_log.jsonl`` (every logging step): ``current_steps``, ``total_steps``, ``elapsed_time``
  (``H:MM:SS``) and, with ``include_num_input_tokens_seen``, ``total_tokens`` (input tokens, padding
  included) and ``throughput``.

Nothing here raises on a half-written log: a run still running has a trainer_log without all_results.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import RESULTS_FILE, TRAINER_LOG


@dataclass(frozen=True)
class MeasuredThroughput:
    """What a run's own files say about its speed; None where they do not say."""

    run_dir: str
    finished: bool  # all_results.json exists
    steps: int | None  # optimizer steps done
    total_steps: int | None
    runtime_s: float | None  # training wall time so far (or in all)
    step_s: float | None  # seconds per optimizer step
    samples_per_s: float | None
    tokens_per_s: float | None  # real tokens per second per GPU (effective_tokens_per_sec), else input tokens
    tokens_source: str  # which key tokens_per_s comes from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def remaining_s(self) -> float | None:
        """Seconds left at the measured step time (for an ETA)."""
        if self.step_s is None or self.steps is None or self.total_steps is None:
            return None
        return max(0, self.total_steps - self.steps) * self.step_s


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_log(path: Path) -> dict[str, Any] | None:
    from lfgen.runs.parsing import last_record

    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    record, _ = last_record(text, [])
    return record


def measured_throughput(run_dir: str | Path) -> MeasuredThroughput:
    """The run's measured speed (InputError when the folder holds neither file, or neither has a time)."""
    from lfgen.runs.parsing import elapsed_seconds, to_float, to_int

    run = Path(run_dir)
    results = _json(run / RESULTS_FILE)
    log = _last_log(run / TRAINER_LOG)
    if results is None and log is None:
        raise InputError(f"{run}: has neither {RESULTS_FILE} nor {TRAINER_LOG}; point at a run's output dir "
                         "(the folder LlamaFactory wrote)")
    results, log = results or {}, log or {}
    steps = to_int(log.get("current_steps"))
    total = to_int(log.get("total_steps"))
    runtime = to_float(results.get("train_runtime"))
    if runtime is None:
        runtime = elapsed_seconds(log.get("elapsed_time"))
    per_step = to_float(results.get("train_steps_per_second"))
    step_s = 1 / per_step if per_step else (runtime / steps if runtime and steps else None)
    tokens, source = to_float(results.get("effective_tokens_per_sec")), "effective_tokens_per_sec"
    if tokens is None and to_float(log.get("total_tokens")) and runtime:
        tokens, source = to_float(log["total_tokens"]) / runtime, "total_tokens / elapsed_time (padding included)"
    if runtime is None:
        raise InputError(f"{run}: neither {RESULTS_FILE} (train_runtime) nor {TRAINER_LOG} (elapsed_time) holds a "
                         "time yet; wait for the first logging step")
    return MeasuredThroughput(str(run), bool(results), steps, total, runtime, step_s,
                              to_float(results.get("train_samples_per_second")), tokens,
                              source if tokens is not None else "")
