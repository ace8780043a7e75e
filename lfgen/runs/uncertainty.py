"""How sure a run's metric is, so that a difference within the noise is never called a win.

* Eval loss: LlamaFactory logs only the mean over the held-out set, so its error is estimated from what a run does
  log. The eval set's sampling error is sigma / sqrt(n): n, the held-out rows, is eval_runtime x
  eval_samples_per_second (the Trainer's own counters); sigma, the spread of one sample's loss, follows from the
  training curve: each logged training loss is the mean of logging_steps x the effective batch samples, so its
  point-to-point scatter (a robust standard deviation of consecutive differences, which cancel the trend) times
  the square root of that count is one sample's spread. The curve's own jitter near its end (second differences
  of the last half of the eval points: they cancel a straight trend) adds in quadrature: a value that moves that
  much from one evaluation to the next is no more precise than that.
* Scores over the scored samples (lfgen eval: ROUGE-1/2/L, BLEU-4 as LlamaFactory computes them per sample, exact
  and answer accuracy): bootstrap intervals from scipy.stats.bootstrap (percentile, 2,000 resamples, seeded),
  paired over the same held-out rows when two runs scored the same ones.

Two values are apart when their difference exceeds Z = 2 of its standard errors (about 95 %), or when the
bootstrap interval of the difference excludes 0.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.runs.reader import RunData

Z = 2.0  # standard errors between two values called apart (about 95 % for a normal difference)
CONFIDENCE = 0.95  # the bootstrap intervals' level
RESAMPLES = 2000
MIN_POINTS = 6  # consecutive training-loss points needed to estimate the scatter
MIN_EVALS = 4  # eval points needed before the curve's jitter counts
_MAD_SD = 1.4826  # a normal distribution's standard deviation per median absolute deviation
# lfgen eval's scores with a value per scored sample: what the bootstrap resamples
PER_SAMPLE = ("predict_rouge-l", "predict_rouge-1", "predict_rouge-2", "predict_bleu-4", "accuracy")


@dataclass(frozen=True)
class Spread:
    """A value, its standard error (None: unknown) and how the error was estimated."""

    value: float
    error: float | None
    how: str

    def shown(self) -> str:
        return f"{self.value:.4g} ± {Z * self.error:.2g}" if self.error is not None else f"{self.value:.4g}"


def _robust_sd(values: Sequence[float]) -> float:
    centre = statistics.median(values)
    return _MAD_SD * statistics.median(abs(v - centre) for v in values)


def eval_rows(run: RunData) -> int | None:
    """Held-out rows of the final evaluation: eval_runtime x eval_samples_per_second (the Trainer's counters)."""
    runtime, speed = run.results.get("eval_runtime"), run.results.get("eval_samples_per_second")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (runtime, speed)):
        return None
    return max(1, round(runtime * speed))


def sample_spread(run: RunData) -> float | None:
    """One sample's loss spread, from the scatter of consecutive logged training losses (last half)."""
    points = [(s, v) for s, v in zip(run.train_loss.steps, run.train_loss.values) if math.isfinite(v)]
    points = points[len(points) // 2:]
    if len(points) < MIN_POINTS:
        return None
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:])]
    gap = statistics.median(gaps)  # a sampled curve keeps blocks of consecutive points: only those pair up
    diffs = [b[1] - a[1] for a, b, g in zip(points, points[1:], gaps) if g == gap]
    if len(diffs) < MIN_POINTS - 1:
        return None
    logging = run.config.get("logging_steps") or gap
    per_point = (run.effective_batch or 1) * (logging if isinstance(logging, (int, float)) else gap)
    return _robust_sd(diffs) / math.sqrt(2) * math.sqrt(max(1.0, per_point))


def eval_loss_spread(run: RunData) -> Spread | None:
    """The run's final eval loss with its standard error (see the module doc); None without an eval loss."""
    value = run.final_eval_loss
    if value is None or not math.isfinite(value):
        return None
    parts, how = [], []
    n, sigma = eval_rows(run), sample_spread(run)
    if n is not None and sigma is not None:
        parts.append(sigma / math.sqrt(n))
        how.append(f"{n} held-out rows")
    evals = [v for v in run.eval_loss.values if math.isfinite(v)]
    tail = evals[len(evals) // 2:]
    if len(evals) >= MIN_EVALS and len(tail) >= 3:
        second = [a - 2 * b + c for a, b, c in zip(tail, tail[1:], tail[2:])]
        parts.append(_robust_sd(second) / math.sqrt(6) if len(second) > 1 else abs(second[0]) / math.sqrt(6))
        how.append(f"the last {len(tail)} evaluations' jitter")
    if not parts:
        return Spread(value, None, "no error estimate (too few logged points)")
    return Spread(value, math.sqrt(sum(p * p for p in parts)), " and ".join(how))


def loss_spread(run: RunData, metric: str) -> Spread | None:
    """*metric* (final_eval_loss, final_train_loss) of the run with its error, when one can be estimated."""
    if metric == "final_eval_loss":
        return eval_loss_spread(run)
    value = getattr(run, metric, None)
    if value is None or not math.isfinite(value):
        return None
    sigma = sample_spread(run)
    # the last logged training loss is one point of the curve: its error is the curve's scatter at one point
    per_point = sigma / math.sqrt(max(1, (run.effective_batch or 1) * int(run.config.get("logging_steps") or 1))) \
        if sigma is not None else None
    return Spread(value, per_point, "the training curve's scatter" if per_point is not None else "no error estimate")


def apart(a: Spread, b: Spread) -> bool | None:
    """Whether two values differ beyond Z standard errors of their difference; None when an error is unknown."""
    if a.error is None or b.error is None:
        return None
    return abs(a.value - b.value) > Z * math.hypot(a.error, b.error)


# --- per-sample scores and their bootstrap ----------------------------------------------------------


def _similarity(predict: str, label: str) -> dict[str, float]:
    """One sample's ROUGE-1/2/L and BLEU-4 as LlamaFactory's ComputeSimilarity computes them (jieba words,
    rouge-chinese F, nltk's sentence BLEU on characters with smoothing method 3), x 100."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hypothesis, reference = list(jieba.cut(predict)), list(jieba.cut(label))
    if not " ".join(hypothesis).split() or not " ".join(reference).split():
        scores = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    else:
        found = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
        scores = {k: round(v["f"] * 100, 4) for k, v in found.items()}
    bleu = sentence_bleu([list(label)], list(predict), smoothing_function=SmoothingFunction().method3)
    return {f"predict_{k}": v for k, v in scores.items()} | {"predict_bleu-4": round(bleu * 100, 4)}


@functools.lru_cache(maxsize=256)
def _scored(path: str, stamp: float) -> tuple[tuple[str, ...], dict[str, tuple[float, ...]]] | None:
    from lfgen.runs.scoring import normalise, read_predictions

    records = read_predictions(Path(path))
    if not records:
        return None
    rows = [(str(r.get("predict") or ""), str(r.get("label") or "")) for r in records]
    values: dict[str, list[float]] = {"accuracy": [float(normalise(p) == normalise(lab)) for p, lab in rows]}
    try:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines are not lfgen's output
        for p, lab in rows:
            for key, value in _similarity(p, lab).items():
                values.setdefault(key, []).append(value)
    except ImportError:  # jieba, nltk or rouge-chinese missing: accuracy only
        pass
    return tuple(lab for _, lab in rows), {k: tuple(v) for k, v in values.items()}


def sample_scores(run_dir: Path, metric: str) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
    """(the references in order, *metric* per scored sample) from the run's generated_predictions.jsonl."""
    from lfgen.layout import EVAL_DIR, PREDICTIONS

    path = Path(run_dir) / EVAL_DIR / PREDICTIONS
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    found = _scored(str(path), stamp)
    if found is None or metric not in found[1]:
        return None
    return found[0], found[1][metric]


def _bootstrap(samples: tuple[Sequence[float], ...], statistic: Any, paired: bool) -> tuple[float, float] | None:
    try:
        import numpy as np
        from scipy import stats
    except ImportError:
        return None
    import warnings

    data = tuple(np.asarray(s, dtype=float) for s in samples)
    if any(len(d) < 2 for d in data):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate sample (every value equal) gives an interval of one point
        found = stats.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=RESAMPLES,
                                confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(0))
    low, high = float(found.confidence_interval.low), float(found.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # every resample the same: the point itself
        value = float(statistic(*[d[None, :] for d in data], axis=-1)[0])
        return value, value
    return low, high


def score_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The bootstrap interval of the mean of one run's per-sample scores (None without scipy)."""
    import numpy as np

    return _bootstrap((values,), lambda x, axis: np.mean(x, axis=axis), paired=False)


def difference_interval(a: Sequence[float], b: Sequence[float], paired: bool) -> tuple[float, float] | None:
    """The bootstrap interval of mean(a) - mean(b); *paired*: the same held-out rows in the same order."""
    import numpy as np

    return _bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                      paired=paired and len(a) == len(b))
