"""Trials scored by lfgen eval (``--metric predict_rouge-l``, ``predict_bleu-4``, ``accuracy``, any ``predict_*``).

Each trial is evaluated after it trains, in its slot, through the runner's ``after_done`` hook (as ``lfgen run
--eval`` does), with the study's generation settings (``--max-samples``, ``--max-new-tokens``; recorded with the
study, so every trial is scored the same way); pruning stays on the eval loss during training. A trial whose
training finished but whose evaluation did not (a tuner killed during it, or Ctrl-C) is evaluated when the study
resumes, never trained again, and is told only once its evaluation has an outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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
                             f"accuracy); this study's metric is {metric}")
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


def evaluator(root: Path, say: Callable[[str], None], options: Any = None, outcomes: dict[str, Any] | None = None,
              *, executor: Any = None, experiment: str = "") -> Callable[[Any, Any, Any], None]:
    """The runner's after_done for a trial scored by lfgen eval (as lfgen run --eval's). Each outcome is kept in
    *outcomes* (run name -> Outcome): a trial whose evaluation ran in this process can be told. With --ray
    (*executor*), each evaluation is a Ray task on the node that holds the trial's adapter
    (lfgen.training.ray_eval), started when the trial has trained; the runner collects them."""
    from lfgen.training.evaluate import EvalOptions

    options = options or EvalOptions()

    def record(outcome: Any) -> None:
        if outcome.status == "failed":
            say(f"{outcome.run}: lfgen eval failed ({outcome.detail}); the trial has no score")
        if outcomes is not None:
            outcomes[outcome.run] = outcome

    if executor is not None:
        from lfgen.training.ray_eval import RayEvaluations

        return RayEvaluations(executor.ray, experiment=experiment, root=root, options=options, cpus=executor.cpus,
                              gpus=executor.gpus, report=record)

    def after_done(store: Any, row: Any, gpus: list[int] | None) -> None:
        from lfgen.training.evaluate import evaluate_recorded

        record(evaluate_recorded(store, row.name, root / row.output_dir, options, gpus=gpus))

    return after_done


def evaluate_left(state_path: Path, root: Path, names: list[str], hook: Callable[[Any, Any, Any], None],
                  gpus: list[int] | None, say: Callable[[str], None]) -> None:
    """Evaluate the runs of *names* that trained but have no score (the tuner that trained them was killed during
    or before their evaluation): through the same hook, on the first GPU given."""
    from lfgen.training.evaluate import is_scored
    from lfgen.runs.store import Store, read_rows

    rows = read_rows(state_path)
    left = [rows[name] for name in names
            if name in rows and rows[name].state == "done" and not is_scored(root / rows[name].output_dir)]
    if not left:
        return
    store = Store(state_path)
    try:
        for row in left:
            say(f"{row.name}: trained, but its evaluation did not finish; evaluating it now")
            hook(store, row, gpus[:1] if gpus else None)
        background = getattr(hook, "pending", None)  # Ray evaluations: wait for them, as the runner does
        while background is not None and background(1.0):
            pass
    finally:
        store.close()
