"""lfgen tune --budget GPU_HOURS: the study never starts a trial it cannot afford.

Spent GPU-hours are measured, never estimated: every trial's wall time x its GPUs from the experiment's own records
(lfgen.runs.spend: each attempt and evaluation in state.sqlite's event log). Before a trial starts, the budget must
hold what is spent, what the trials running now still need (the high end of their estimate less what they have
run) and the new trial at the high end of its estimate (lfgen.builder.timing: calibrated by lfgen calibrate,
start-up included), scaled by this study's own measured / estimated ratio (the largest of the trials that finished,
and of any on its first attempt that has already run longer than its estimate: a trial slower than its estimate
widens what the next is allowed). When it does not, no trial starts, and the study
stops resumable, recorded as stopped by budget in study.db (``lfgen tune NAME --budget MORE`` goes on). Estimates
can be wrong, measurements are not: a running trial that would take the spend past the budget is stopped, recorded
interrupted, and resumes from its checkpoint when the study goes on (held back until the budget allows it: it needs
its start-up again and what its newest whole checkpoint does not save); that
stop keeps STOP_MARGIN_S per running trial, and admission reserves the same margin for each running trial and the new
one, so a trial admitted is never stopped by the margin before its estimate ends. The budget is recorded with the
study, so a resume without --budget keeps it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.runs.study import BUDGET_STOP as STOP_ATTR  # why and when the budget stopped the study (None: went on)

MAX_GPU_HOURS = 100_000.0  # beyond any one tuning study (about $250,000 at $2.5): a larger figure is a typo
CHECK_S = 1.0  # how often the running trials' spend is measured against the budget (the runner polls every 0.2 s)
STOP_MARGIN_S = 10.0  # GPU seconds kept per running trial for stopping it (SIGTERM to its process group's end)


def check_budget(value: Any) -> float:
    """A budget a user gave: GPU-hours in (0, MAX_GPU_HOURS]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 < value <= MAX_GPU_HOURS:
        raise InputError(f"--budget: must be GPU-hours above 0 and at most {MAX_GPU_HOURS:,.0f} (got {value!r}); "
                         "give the GPU time the study may use, e.g. --budget 24 (24 GPU-hours)")
    return float(value)


@dataclass
class TrialCost:
    """One trial's estimate: its point GPU-seconds and the high end a budget allows for."""

    wall_s: float
    high_s: float
    num_gpus: int
    startup_s: float = 0.0  # calibrated start-up, in both figures: a resumed trial pays it again

    @property
    def high_gpu_hours(self) -> float:
        return self.high_s * self.num_gpus / 3600

    def need_s(self, ratio: float, kept: float = 0.0) -> float:
        """Seconds at the high end, scaled by *ratio*, for a run that resumes with the share *kept* of its steps."""
        startup = min(self.startup_s, self.high_s)
        return (startup + (self.high_s - startup) * (1 - kept)) * ratio


def estimate(result: Any, price: float | None = None) -> tuple[TrialCost | None, str, Any]:
    """(the trial's estimate, why there is none, the RunCost) for a Build *result*: on its --gpu, else on this
    machine (its first GPU, else the CPU)."""
    from lfgen.builder.run_estimate import machine_device
    from lfgen.builder.timing import estimate_config_time

    if result.hardware is not None:
        gpu = result.hardware.gpu
    else:
        gpu, _ = machine_device()
    num_gpus = result.options.num_gpus
    try:
        cost = estimate_config_time(str(result.config.get("model_name_or_path", "")), result.config, gpu, num_gpus,
                                    result.samples, result.lengths, price)
    except InputError as exc:
        if "--price" in str(exc):
            raise
        return None, str(exc).splitlines()[0], None
    if cost.time is None:
        return None, cost.note, cost
    return _trial_cost(cost, num_gpus), "", cost


def _trial_cost(cost: Any, num_gpus: int) -> TrialCost:
    return TrialCost(cost.wall_s, max(cost.high_wall_s, cost.wall_s), num_gpus, (cost.basis or {}).get("startup_s", 0.0))


class Gate:
    """The budget of one lfgen tune session: what is spent and committed, and whether the next trial fits."""

    def __init__(self, gpu_hours: float, root: Path, state_path: Path, price: float | None = None):
        self.gpu_hours, self.root, self.state_path, self.price = gpu_hours, root, state_path, price
        self.estimates: dict[str, TrialCost | None] = {}  # trial run -> its estimate (None: none could be made)
        self._checked = -math.inf  # when spent_out last measured
        self.stopped: dict[str, float] | None = None  # spent_out's figures when it last said stop
        # trial -> (the share of its steps it resumed with, its measured wall seconds when it was admitted): what a
        # running trial still needs is counted from its admission, not from its earlier attempts
        self.admitted: dict[str, tuple[float, float]] = {}

    def cost_of(self, name: str, config: Path) -> TrialCost | None:
        """A laid-out trial's estimate (from its written config, where it trained or will), computed once."""
        if name not in self.estimates:
            from lfgen.builder.run_estimate import estimate_written, machine_placement, placement, read_written
            from lfgen.layout import ENV_MANIFEST
            from lfgen.runs.environment import read_environment

            try:
                written = read_written(config)
            except InputError:
                self.estimates[name] = None
                return None
            out = self.root / str(written.config.get("output_dir", ""))
            environment = read_environment(out / ENV_MANIFEST, []) if (out / ENV_MANIFEST).is_file() else {}
            where = placement(written, environment) or machine_placement(written)
            cost = estimate_written(written, where, self.price) if where is not None else None
            self.estimates[name] = None if cost is None or cost.time is None else _trial_cost(cost, cost.num_gpus)
        return self.estimates[name]

    def affordable(self, cost: TrialCost, runs: list[tuple[str, Path, str]], running: set[str], done: set[str],
                   name: str | None = None) -> tuple[bool, dict[str, float]]:
        """Whether a trial at *cost* fits beside what the trials *runs* (name, config, output dir) have spent and what
        the *running* ones still need; *done*: the trials that trained to the end (this study's measured / estimated
        ratio: the largest of theirs and of first attempts already past their estimate, so a trial slower than its
        estimate widens what the next is allowed).
        *name*: a laid-out trial to resume (what it has spent is counted; it needs its start-up again and what its
        newest whole checkpoint does not save)."""
        from lfgen.runs.spend import experiment_spend

        spends = experiment_spend(self.state_path, self.root, [(run, out) for run, _, out in runs])
        configs = {run: config for run, config, _ in runs}
        outputs = {run: out for run, _, out in runs}
        spent = sum(s.gpu_hours for s in spends.values())
        # a trial on its first attempt that has already run longer than its estimate counts too: its ratio is at least
        # that (a later attempt's wall time adds what an earlier one lost, so it says nothing of the speed)
        ratios = [spends[run].wall_s / planned.wall_s for run in spends
                  if (planned := self.cost_of(run, configs[run])) is not None and planned.wall_s > 0
                  and spends[run].wall_s > 0
                  and (run in done or (spends[run].attempts <= 1 and spends[run].wall_s > planned.wall_s))]
        ratio = max(ratios) if ratios else 1.0
        # Each trial, running or to start, also keeps spent_out's stop margin: a trial admitted here is never stopped
        # by that margin before its high estimate ends.
        margin = STOP_MARGIN_S / 3600
        committed = margin * len(running)
        for run in running & set(spends):
            planned = self.cost_of(run, configs[run])
            if planned is not None:  # what it planned at the high end when admitted, less what it has run since
                kept, then = self.admitted.get(run, (0.0, 0.0))
                left = planned.need_s(ratio, kept) - (spends[run].wall_s - then)
                committed += max(0.0, left) * spends[run].devices / 3600
        kept = kept_share(self.root / outputs[name]) if name in outputs else 0.0  # what its checkpoint saves
        need = cost.need_s(ratio, kept) * cost.num_gpus / 3600 + margin
        figures = {"budget_gpu_hours": self.gpu_hours, "spent_gpu_hours": round(spent, 6),
                   "running_gpu_hours": round(committed, 6), "next_gpu_hours": round(need, 6),
                   "study_ratio": round(ratio, 4), "measured_trials": len(ratios)}
        return spent + committed + need <= self.gpu_hours, figures

    def admit(self, name: str, output_dir: str) -> None:
        """Trial *name* starts now (admitted by affordable): what it resumes with and has run so far are kept."""
        from lfgen.runs.spend import experiment_spend

        spends = experiment_spend(self.state_path, self.root, [(name, output_dir)])
        self.admitted[name] = (kept_share(self.root / output_dir), spends[name].wall_s if name in spends else 0.0)

    def spent_out(self, runs: list[tuple[str, str]], running: Callable[[], int]) -> str | None:
        """Why the running trials must stop now (the budget is spent, measured up to now, with STOP_MARGIN_S per
        running trial kept for stopping it: *running* counts them), or None; checked at most every CHECK_S seconds.
        When it says stop, ``stopped`` holds the figures for study.db."""
        from lfgen.runs.spend import experiment_spend

        now = time.monotonic()
        if now - self._checked < CHECK_S:
            return None
        self._checked = now
        spent = sum(s.gpu_hours for s in experiment_spend(self.state_path, self.root, runs).values())
        kept = running() * STOP_MARGIN_S / 3600
        if spent + kept < self.gpu_hours:
            return None
        self.stopped = {"budget_gpu_hours": self.gpu_hours, "spent_gpu_hours": round(spent, 6),
                        "running_gpu_hours": round(kept, 6), "next_gpu_hours": 0.0}
        return (f"the budget is spent ({spent:.3g} of {self.gpu_hours:g} GPU-hours, measured): stopped, resumable "
                f"(lfgen tune NAME --budget MORE resumes it from its last checkpoint)")


def kept_share(output_dir: Path) -> float:
    """The share of its steps an interrupted trial resumes with: its newest whole checkpoint's global_step over
    max_steps (0 without one: it trains again from the start, and its earlier attempt's time is spent for nothing)."""
    import json

    from lfgen.layout import TRAINER_STATE
    from lfgen.training.rundir import broken, checkpoints

    for checkpoint in reversed(checkpoints(output_dir)):
        if broken(checkpoint) is None:
            try:  # read again: a running trial's checkpoint can be rotated away between the two reads
                state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return 0.0
            steps, total = (state.get("global_step"), state.get("max_steps")) if isinstance(state, dict) else (0, 0)
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (steps, total)) and total > 0
            return min(1.0, max(0.0, steps / total)) if ok else 0.0
    return 0.0


def stop_message(study_name: str, trial: str, figures: dict[str, float]) -> str:
    return (f"stopped by budget: {figures['spent_gpu_hours']:.3g} of {figures['budget_gpu_hours']:g} GPU-hours "
            f"spent{_running(figures)}, and {trial} needs up to {figures['next_gpu_hours']:.3g} more; no trial "
            f"started. lfgen tune {study_name} --budget MORE goes on (the study is kept as it is)")


def _running(figures: dict[str, float]) -> str:
    running = figures.get("running_gpu_hours") or 0
    return f", up to {running:.3g} still needed by the trials running" if running else ""


def record_stop(study: Any, message: str, figures: dict[str, float], trial: str) -> None:
    """The stop, in study.db: what report and status show."""
    study.set_user_attr(STOP_ATTR, {**figures, "trial": trial, "message": message, "time": time.time()})


def clear_stop(study: Any) -> None:
    if study.user_attrs.get(STOP_ATTR):
        study.set_user_attr(STOP_ATTR, None)
