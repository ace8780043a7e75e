"""THE metric registry: a metric's name, its direction (lower or higher is better) and the command whose files hold
it (``train``: lfgen run's LlamaFactory training, ``all_results.json``; ``eval``: lfgen eval, ``<run>/eval/``).

The table is data (presets/metrics.yaml). Every reader of a direction (compare's best run, ``sweep --from``, the
tuner's study direction, the report's best-so-far line) and every "does this metric need lfgen eval" (lfgen tune
evaluates each trial then) asks here, and ``value`` reads a run's value of a metric from both places.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from lfgen.layout import RESULTS_FILE
from lfgen.resources import load_data

TRAIN, EVAL = "train", "eval"  # the commands that write a metric: lfgen run (training), lfgen eval
_LOW_WORDS = ("loss", "perplexity", "runtime", "time")  # an unlisted metric named so is better low


@dataclass(frozen=True)
class Metric:
    name: str
    lower_is_better: bool
    by: str  # TRAIN or EVAL
    judges_loss: bool = False  # compare checks the best run by loss against the best by this score
    known: bool = True  # listed in presets/metrics.yaml (else its direction and command follow from its name)


@functools.cache
def table() -> dict[str, Metric]:
    """presets/metrics.yaml, checked: a malformed entry is a bug in the shipped file, said by name."""
    found = {}
    for name, entry in load_data("metrics.yaml")["metrics"].items():
        if entry.get("better") not in ("lower", "higher") or entry.get("by") not in (TRAIN, EVAL) \
                or set(entry) - {"better", "by", "judges_loss"}:
            raise ValueError(f"presets/metrics.yaml: {name}: needs better: lower|higher and by: train|eval "
                             f"(got {entry})")
        found[name] = Metric(name, entry["better"] == "lower", entry["by"], bool(entry.get("judges_loss")))
    return found


def metric(name: str) -> Metric:
    """The registry's entry for *name*, else what its name says (see presets/metrics.yaml)."""
    known = table().get(name)
    if known is not None:
        return known
    return Metric(name, any(word in name for word in _LOW_WORDS), EVAL if name.startswith("predict_") else TRAIN,
                  known=False)


def lower_is_better(name: str) -> bool:
    return metric(name).lower_is_better


def needs_eval(name: str) -> bool:
    """Whether *name* is one of lfgen eval's scores (predict_rouge-l, accuracy, answer_accuracy, ...): a run has it
    only once it has been evaluated; lfgen tune then evaluates each trial after it trains and scores it on it."""
    return metric(name).by == EVAL


def eval_names() -> list[str]:
    """lfgen eval's metrics in the registry, for messages."""
    return [m.name for m in table().values() if m.by == EVAL]


def judging_loss() -> list[str]:
    """The answer scores compare sets beside the loss ranking, in order."""
    return [m.name for m in table().values() if m.judges_loss]


def value(run_dir: Path, name: str) -> float | None:
    """Run *run_dir*'s value of metric *name*: from ``all_results.json`` (a finished training) merged with lfgen eval's
    scores (``<run>/eval/``); None when the run has not finished or the value is not a number."""
    from lfgen.runs.scoring import read_eval

    results = run_dir / RESULTS_FILE
    if not results.is_file():
        return None  # LlamaFactory writes all_results.json when training has finished
    try:
        values = json.loads(results.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None
    if not isinstance(values, dict):
        return None
    values = {**values, **read_eval(run_dir)}
    found = values.get(name)
    return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else None
