"""What a run's curves say (RULES.md §6), and what to try next in an experiment (R-EXP-ORDER).

Each run gets findings ``{kind, rule, message, advice}``; kinds follow seed 001's decision tree:
NaN first (nothing else is meaningful after it), then "is the loss falling?", then oscillation and
overfitting; gradient spikes and slowness are independent. A run with enough data and no finding
is ``healthy``.

Thresholds:

================== ======= ==========================================================================
constant           value   meaning
================== ======= ==========================================================================
MIN_POINTS         8       train-loss points needed before a trend or an oscillation is judged
WINDOW_FRACTION    0.1     share of the curve whose median is its "start" and its "end"
STALL_MIN_DROP     0.03    a loss that fell less than 3% from start to end is not learning
RISE_MIN           0.05    a loss that ended 5% or more above its start is rising (R-DIAG-OSC)
OSC_AMPLITUDE      0.1     in the second half, a median distance of a point from the mean of its two
                           neighbours above 10% of the loss level is oscillation (a ±5% zigzag; noise
                           of σ ≈ 12%) ...
OSC_MIN_ABS        0.02    ... when that distance is also above 0.02 (in loss units)
OSC_MIN_TRIPLES    5       triples of consecutive logged steps needed to judge oscillation
OVERFIT_MIN_EVALS  3       eval points needed before overfitting is judged
OVERFIT_MIN_RISE   0.03    the last eval loss 3% or more above the best one, train loss still falling
GRAD_MIN_POINTS    5       grad_norm points needed before a spike is judged
GRAD_SPIKE_FACTOR  10      a grad_norm above 10x the run's median is a spike ...
GRAD_MAX           100     ... and so is any above 100 (LoRA norms are typically 0.1-10)
SLOW_FACTOR        0.5     samples/s under half the median of the experiment's other runs
ZERO_LOSS_POINTS   2       exact-zero losses that make the #2916/#8088 signature without grad_norm
================== ======= ==========================================================================
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lfgen.experiments.sweeps import axes, axis_keys, seed_order
from lfgen.layout import RUN_CONFIG
from lfgen.runs.ranking import best as best_of
from lfgen.runs.ranking import disagreement
from lfgen.runs.scoring import answer_flags
from lfgen.runs.reader import NOT_STARTED, RunData

MIN_POINTS = 8
WINDOW_FRACTION = 0.1
STALL_MIN_DROP = 0.03
RISE_MIN = 0.05
OSC_AMPLITUDE = 0.1
OSC_MIN_ABS = 0.02
OSC_MIN_TRIPLES = 5
OVERFIT_MIN_EVALS = 3
OVERFIT_MIN_RISE = 0.03
GRAD_MIN_POINTS = 5
GRAD_SPIKE_FACTOR = 10.0
GRAD_MAX = 100.0
SLOW_FACTOR = 0.5
ZERO_LOSS_POINTS = 2

HEALTHY, NAN, STALL, OSC, OVERFIT, GRAD, SLOW = (
    "healthy", "nan", "not-learning", "oscillating", "overfitting", "gradient-explosion", "slow")
BEST_BY = ("final_eval_loss", "final_train_loss")  # what ranks an experiment's runs, first found first


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis of one run; ``rule`` is the id in presets/rules.yaml (None for healthy)."""

    kind: str
    rule: str | None
    message: str
    advice: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """The best run of one experiment and the next step to take."""

    experiment: str
    runs: int
    best_run: str | None
    best_by: str | None  # "final_eval_loss" or "final_train_loss"
    best_value: float | None
    varied: tuple[str, ...]
    next_step: str
    disagreement: str | None = None  # the best run by ROUGE-L / accuracy, when it is not the best by loss

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def diagnose_run(run: RunData, peer_speeds: Sequence[float] = ()) -> list[Finding]:
    """Findings for one run; *peer_speeds* are the samples/s of the other runs of its experiment."""
    findings: list[Finding] = []
    nan = _nan(run)
    if nan:
        findings.append(nan)
    else:
        trend = _trend(run)
        findings += [f for f in (trend, None if trend else _oscillation(run), _overfit(run), _grad(run)) if f]
    slow = _slow(run, peer_speeds)
    if slow:
        findings.append(slow)
    findings += _answers(run)
    if not findings and len(_finite(run.train_loss.values)) >= MIN_POINTS:
        head, tail = _ends(_finite(run.train_loss.values))
        findings.append(Finding(HEALTHY, None, f"training loss fell {_pct(head - tail, head)} ({head:.3g} → "
                                f"{tail:.3g}) without NaN, oscillation or gradient spikes", ""))
    return findings


def summary_text(findings: Sequence[Finding], run: RunData) -> str:
    """A few words for a table cell: the kinds, with the best eval step for overfitting."""
    if not findings:
        return "no data" if run.state in NOT_STARTED else "too short to judge"
    words = []
    for finding in findings:
        if finding.kind == OVERFIT and run.best_eval[1] is not None:
            words.append(f"overfitting (best eval @ step {run.best_eval[1]:g})")
        else:
            words.append(finding.kind)
    return ", ".join(words)


def summarize_experiment(name: str, runs: Sequence[tuple[str, RunData, Sequence[Finding]]]) -> ExperimentSummary:
    """Best run and next step. Best (``lfgen.runs.ranking.best``): lowest final eval loss (the adapter a
    run ends with; what ``lfgen sweep --from`` ranks by), else lowest final train loss; NaN runs and runs
    not started never win."""
    nan = any(f.kind == NAN for _, _, findings in runs for f in findings)
    usable = [(label, run) for label, run, findings in runs
              if run.state not in NOT_STARTED and not any(f.kind == NAN for f in findings)]
    varied = _varied([run for _, run in usable] or [run for _, run, _ in runs])
    found, best_by = None, None
    for best_by in BEST_BY:
        found = best_of(usable, functools.partial(_loss, best_by), best_by)
        if found is not None:
            break
    if found is None:
        why = ("no run has a loss without NaN yet; fix the findings above first" if nan else
               "no run has logged a loss yet; compare again once training has logged its first steps")
        return ExperimentSummary(name, len(runs), None, None, None, varied, why)
    label, best = found
    value = getattr(best, best_by)
    # --from takes the folder of the experiment's runs; a lone run's folder may hold unrelated runs.
    folder = Path(os.path.commonpath([str(run.path) for _, run, _ in runs])) if len(runs) > 1 else None
    return ExperimentSummary(name, len(runs), label, best_by, value, varied, _next_step(best, varied, folder, best_by),
                             _disagreement(usable, label, best, best_by))



def _disagreement(usable: Sequence[tuple[str, RunData]], label: str, best: RunData, best_by: str) -> str | None:
    return disagreement(usable, lambda item, m: item[1].results.get(m), label, best_by, getattr(best, best_by))


def _answers(run: RunData) -> list[Finding]:
    return [Finding(kind, "R-DIAG-ANSWERS", message, advice) for kind, message, advice in answer_flags(run.results)]


def _loss(metric: str, item: tuple[str, RunData]) -> float | None:
    return getattr(item[1], metric)


# --- findings ---------------------------------------------------------------------------------------


def _nan(run: RunData) -> Finding | None:
    cfg = run.config
    precision = ("fp16 is on: switch to bf16 (fp32 on GPUs without bf16)" if cfg.get("fp16") else
                 "train in bf16 or fp32, not fp16")
    clip = cfg.get("max_grad_norm")
    clipping = "keep max_grad_norm: 1.0" if clip in (None, 1, 1.0) else f"set max_grad_norm: 1.0 (now {clip})"
    advice = f"{precision}; {clipping}"
    for label, series in (("training loss", run.train_loss), ("eval loss", run.eval_loss)):
        bad = [s for s, v in zip(series.steps, series.values) if not math.isfinite(v)]
        if bad:
            return Finding(NAN, "R-DIAG-NAN", f"{label} is NaN/Inf, first at step {bad[0]:g}", advice)
    zeros = [s for s, v in zip(run.train_loss.steps, run.train_loss.values) if v == 0.0]
    grad_nan = any(math.isnan(v) for v in run.grad_norm.values)
    if zeros and (grad_nan or len(zeros) >= ZERO_LOSS_POINTS):
        cause = "with grad_norm NaN" if grad_nan else "at several logged steps"
        return Finding(NAN, "R-DIAG-NAN", f"training loss is exactly 0 {cause} from step {zeros[0]:g}: the "
                       "signature of a broken run in LlamaFactory issues #2916 and #8088",
                       f"{advice}; if it persists, flash_attn: disabled (the fix reported in #8088)")
    return None


def _trend(run: RunData) -> Finding | None:
    values = _finite(run.train_loss.values)
    if len(values) < MIN_POINTS:
        return None
    head, tail = _ends(values)
    change = (tail - head) / abs(head) if head else 0.0
    lr, rank = run.config.get("learning_rate"), run.config.get("lora_rank")
    if change >= RISE_MIN:
        return Finding(OSC, "R-DIAG-OSC", f"training loss rose {_pct(tail - head, head)} ({head:.3g} → {tail:.3g})",
                       f"lower learning_rate{_now(lr)} (try half); more regularisation (lora_dropout, weight_decay)")
    if -change < STALL_MIN_DROP:
        return Finding(STALL, "R-DIAG-STALL", f"training loss fell only {_pct(head - tail, head)} ({head:.3g} → "
                       f"{tail:.3g}) by step {run.train_loss.steps[-1]:g}",
                       f"raise learning_rate{_now(lr)} (LoRA: 1e-4..5e-4) or lora_rank{_now(rank)}")
    return None


def _oscillation(run: RunData) -> Finding | None:
    points = [(s, v) for s, v in zip(run.train_loss.steps, run.train_loss.values) if math.isfinite(v)]
    if len(points) < MIN_POINTS:
        return None
    steps, values = np.asarray(points, dtype=float).T
    gaps = np.diff(steps)
    # Triples of consecutive logged steps (a sampled curve comes in blocks of them), second half only.
    consecutive = (gaps[:-1] == np.median(gaps)) & (gaps[1:] == np.median(gaps))
    chosen = consecutive & (np.arange(1, len(values) - 1) >= len(values) // 2)
    if chosen.sum() < OSC_MIN_TRIPLES:
        return None
    # Distance of a point from the mean of its two neighbours: ~0 on any smooth trend, 2d on a zigzag of
    # ±d (a rolling median would hide exactly that: it picks the majority of the zigzag).
    distance = float(np.median(np.abs(values[1:-1] - (values[:-2] + values[2:]) / 2)[chosen]))
    level = float(np.median(np.abs(values[len(values) // 2:])))
    if level and distance / level > OSC_AMPLITUDE and distance > OSC_MIN_ABS:
        return Finding(OSC, "R-DIAG-OSC", f"training loss jumps by {distance / level:.0%} from one logged step to "
                       "the next in the second half of the run", f"lower learning_rate"
                       f"{_now(run.config.get('learning_rate'))} (seed 001: 1e-3 oscillates, 2e-4 does not); more "
                       "regularisation (lora_dropout, weight_decay)")
    return None


def _overfit(run: RunData) -> Finding | None:
    points = [(s, v) for s, v in zip(run.eval_loss.steps, run.eval_loss.values) if math.isfinite(v)]
    if len(points) < OVERFIT_MIN_EVALS:
        return None
    best_step, best = min(points, key=lambda p: p[1])
    last = points[-1][1]
    if best_step == points[-1][0] or best <= 0 or (last - best) / best < OVERFIT_MIN_RISE:
        return None
    train = [(s, v) for s, v in zip(run.train_loss.steps, run.train_loss.values) if math.isfinite(v)]
    before = [v for s, v in train if s <= best_step]
    after = [v for s, v in train if s > best_step]
    falling = ""
    if before and after:
        end = statistics.median(after[-max(1, len(after) // 5):])
        if end >= before[-1]:
            return None  # both rising: that is the training loss's problem, not overfitting
        falling = f" while training loss kept falling ({before[-1]:.3g} → {end:.3g})"
    dropout = run.config.get("lora_dropout")
    return Finding(OVERFIT, "R-DIAG-OVERFIT", f"eval loss rose {_pct(last - best, best)} after its best at step "
                   f"{best_step:g} ({best:.3g} → {last:.3g}){falling}",
                   f"raise lora_dropout{_now(dropout)} (0.2 for severe overfitting), train fewer epochs or stop "
                   f"at step {best_step:g} (early_stopping_steps, or load_best_model_at_end)")


def _grad(run: RunData) -> Finding | None:
    finite = [(s, v) for s, v in zip(run.grad_norm.steps, run.grad_norm.values) if math.isfinite(v)]
    broken = len(run.grad_norm) - len(finite)
    if len(finite) < GRAD_MIN_POINTS and not broken:
        return None
    median = statistics.median(v for _, v in finite) if finite else 0.0
    limit = min(GRAD_SPIKE_FACTOR * median, GRAD_MAX) if median > 0 else GRAD_MAX
    spikes = [(s, v) for s, v in finite if v > limit]
    if not spikes and not broken:
        return None
    parts = []  # no counts: a long run's grad_norm is sampled (its largest values always kept)
    if spikes:
        step, peak = max(spikes, key=lambda p: p[1])
        parts.append(f"grad_norm spiked up to {peak:.3g} at step {step:g} (median {median:.3g})")
    if broken:
        first = next(s for s, v in zip(run.grad_norm.steps, run.grad_norm.values) if not math.isfinite(v))
        parts.append(f"grad_norm was NaN/Inf, first at step {first:g}")
    return Finding(GRAD, "R-DIAG-GRAD", "; ".join(parts),
                   f"lower learning_rate{_now(run.config.get('learning_rate'))}; check the data for very long or "
                   "broken samples; keep max_grad_norm: 1.0")


def _slow(run: RunData, peer_speeds: Sequence[float]) -> Finding | None:
    speed = run.samples_per_s
    peers = [p for p in peer_speeds if p and math.isfinite(p)]
    if not speed or not peers:
        return None
    median = statistics.median(peers)
    if speed >= SLOW_FACTOR * median:
        return None
    workers = run.config.get("dataloader_num_workers")
    return Finding(SLOW, "R-DIAG-SLOW", f"{speed:.3g} samples/s, {median / speed:.1f}x slower than the median of "
                   f"the experiment's other runs ({median:.3g})",
                   f"more dataloader workers (dataloader_num_workers{_now(workers)}); group_by_length: true when "
                   "sample lengths vary and packing is off; a larger rank or more target modules also cost time")


# --- next step (R-EXP-ORDER) ------------------------------------------------------------------------


def tuning_order() -> tuple[str, ...]:
    """Seed 000's one-parameter-at-a-time order of sweep axes, from presets/sweeps.yaml (as ``lfgen sweep plan``)."""
    keys = axis_keys()
    return tuple(axis for axis in seed_order() if axis in keys)


def _varied(runs: Sequence[RunData]) -> tuple[str, ...]:
    return tuple(key for key in axis_keys().values()
                 if len({repr(run.config.get(key)) for run in runs if run.config}) > 1)


def _next_step(best: RunData, varied: tuple[str, ...], folder: Path | None, best_by: str) -> str:
    from lfgen.builder.shapes import of_config

    cfg = best.config
    order = of_config(cfg).tuning_axes(tuning_order())  # a full fine-tune has no rank; a DPO run has beta
    keys = axis_keys()
    axis_of = {key: axis for axis, key in keys.items()}
    # The first axis of the order the experiment varied is its stage; a rank sweep moves alpha too.
    stage = next((axis for axis in order if keys[axis] in varied),
                 next((axis_of[key] for key in varied), None))
    if stage is None:
        what, following = "one configuration only", order[0]
    else:
        what = f"{stage} {_num(cfg.get(keys[stage]))} best"
        if stage == "alpha" and cfg.get("lora_rank") is not None:
            what += f" (rank {cfg['lora_rank']})"
        following = order[order.index(stage) + 1] if stage in order[:-1] else None if stage in order else order[0]
    if following is None:
        text = (f"{what} → combine the best value of each stage in one config and validate it on held-out data, "
                f"weighing overfitting and time against the gain (start from {_shown(best.config_file or best.path)})")
    else:
        text = f"{what} → sweep {following}{_values(following, cfg)}: {_command(following, best, folder, best_by)}"
    # A rank sweep moves alpha, and with it R-LR-RANK's learning rate: by design, not a second parameter.
    extra = [k for k in varied if stage and k != keys[stage]
             and not (stage == "rank" and k in ("lora_alpha", "learning_rate"))]
    if extra:
        text += (f" (note: {', '.join(extra)} changed as well; R-EXP-ORDER tunes one parameter at a time, "
                 "so the comparison mixes their effects)")
    return text


def _values(axis: str, cfg: dict[str, object]) -> str:
    """The values ``lfgen sweep AXIS`` tries by default, as presets/sweeps.yaml lists them."""
    spec = axes().get(axis)
    if spec is None:
        return ""
    rank = cfg.get("lora_rank")
    if spec.get("type") == "ratio":
        if not isinstance(rank, int):
            return ""
        return f" at rank {rank} ({', '.join(str(int(v * rank)) for v in spec['values'])})"
    return f" ({', '.join(_num(v) for v in spec['values'])})"


def _command(axis: str, best: RunData, folder: Path | None, best_by: str) -> str:
    if folder is not None and best.config_file is not None and best.config_file.name == RUN_CONFIG:
        # lfgen sweep --from picks the best finished run in that folder itself, by all_results.json.
        metric = "" if best_by == "final_eval_loss" else " --metric train_loss"
        return f"`lfgen sweep {axis} --from {_shown(folder)}{metric}`"
    if best.config_file is not None and best.config_file.suffix == ".yaml":
        return f"`lfgen sweep {axis} --base {_shown(best.config_file)}`"
    return f"`lfgen sweep {axis} --base <the best run's config>` (no config file was found next to the run)"


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


# --- helpers ----------------------------------------------------------------------------------------


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _ends(values: Sequence[float]) -> tuple[float, float]:
    """Medians of the first and the last WINDOW_FRACTION of a curve (at least two points each)."""
    window = max(2, round(len(values) * WINDOW_FRACTION))
    return statistics.median(values[:window]), statistics.median(values[-window:])


def _pct(part: float, whole: float) -> str:
    return f"{part / abs(whole):.0%}" if whole else "n/a"


def _num(value: object) -> str:
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-")
    return str(value)


def _now(value: object) -> str:
    return f", now {_num(value)}" if value is not None else ""
