"""Trials scored by lfgen eval (``--metric predict_rouge-l``, ``accuracy``, ``answer_accuracy``, any of lfgen eval's
metrics: lfgen.runs.metrics): the generation settings a study records.

Each trial is evaluated after it trains, in its slot, by the runner's evaluations (as ``lfgen run --eval``; a Ray
task with --ray), with the study's generation settings (``--max-samples``, ``--max-new-tokens``; recorded with the
study, so every trial is scored the same way); pruning stays on the eval loss during training. A trial whose
training finished but whose evaluation did not (a tuner killed during it, or Ctrl-C) is evaluated when the study
resumes, never trained again, and is told only once its evaluation has an outcome (lfgen.tuning.trials).
"""

from __future__ import annotations

from typing import Any

from lfgen.errors import InputError
from lfgen.runs.metrics import needs_eval

EVAL_SETTINGS = ("max_samples", "max_new_tokens")  # recorded with the study when the metric needs lfgen eval
DEFAULT_NEW_TOKENS = 128


def eval_settings(metric: str, max_samples: int | None, max_new_tokens: int | None) -> dict[str, Any]:
    """The generation settings a new study records ({} when its metric needs no lfgen eval)."""
    if not needs_eval(metric):
        given = [flag for flag, value in (("--max-samples", max_samples), ("--max-new-tokens", max_new_tokens))
                 if value is not None]
        if given:
            raise InputError(f"{given[0]}: only with an lfgen eval --metric (predict_rouge-l, predict_bleu-4, "
                             f"accuracy, answer_accuracy); this study's metric is {metric}")
        return {}
    options = options_of({"max_samples": max_samples, "max_new_tokens": max_new_tokens})
    options.check()
    return {"max_samples": options.max_samples, "max_new_tokens": options.max_new_tokens}


def options_of(settings: dict[str, Any]) -> Any:
    """The EvalOptions of a study's settings: greedy, so a trial's score is deterministic."""
    from lfgen.training.evaluate import EvalOptions

    new_tokens = settings.get("max_new_tokens")
    return EvalOptions(max_samples=settings.get("max_samples"),
                       max_new_tokens=DEFAULT_NEW_TOKENS if new_tokens is None else new_tokens)
