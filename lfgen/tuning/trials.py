"""lfgen tune's trials as the runner's run source: asked from Optuna when a slot frees, told as each run ends.

``Trials`` is a ``lfgen.training.sources.RunSource``. Each time the runner has a free slot it calls ``next``: the
study asks for a trial, which is laid out as ``runs/trial-NNN.yaml`` (built like a sweep's runs) and added to the
manifest and the run state, then trained. At each poll of a trial's run ``progress`` reports a new eval loss at its
step and answers whether the pruner stops it; a pruned trial's slot starts the next trial at once. When a run has
its outcome (trained, and evaluated when the metric is lfgen eval's; failed; pruned) ``ended`` tells the study, so
the sampler knows it before it proposes the next trial.

Order of writes, so that ``kill -9`` at any moment loses nothing and repeats nothing: ask (trial RUNNING in study.db)
-> runs/<trial>.yaml and the manifest -> train (state.sqlite) -> evaluate -> tell. On the next ``lfgen tune NAME``
(holding the experiment's lock, so no other tuner is alive) every trial still RUNNING is a killed one: its run is
laid out from the trial's own parameters if it was not yet, resumed from its last checkpoint by the runner,
evaluated when it trained but has no score (``opened``), or only told when it had its outcome.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfgen.experiments.sweeps import RunSpec
from lfgen.runs import study as studies
from lfgen.runs.metrics import lower_is_better, needs_eval
from lfgen.runs.metrics import value as metric_value
from lfgen.runs.ranking import finite
from lfgen.runs.reader import steps_logged
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow, Store
from lfgen.training.evaluate import is_scored
from lfgen.training.watch import Progress
from lfgen.tuning import space as spaces
from lfgen.tuning import strategies
from lfgen.tuning.rebuild import rebuild

FIXED_CAUSES = ("config", "model", "hub")  # failures no parameter of the space changes (a full disk stops at once)
RETRIED = "retried"  # a trial's user attribute: it failed on a full disk, its parameters are tried again by another


def _writes(method: Callable[..., Any]) -> Callable[..., Any]:
    """A write to the study that fails (a full disk under experiments/) is one StateError naming study.db."""
    @functools.wraps(method)
    def wrapped(self: Trials, *args: Any, **kwargs: Any) -> Any:
        with studies.writing(self.folder / studies.STUDY_FILE):
            return method(self, *args, **kwargs)
    return wrapped


class Trials:
    """The trials of one lfgen tune process (the experiment's lock held): the runner's source."""

    def __init__(self, folder: Path, root: Path, experiment: Any, settings: dict[str, Any], *, width: int,
                 seconds: float | None, say: Callable[[str], None], outputs_dir: str, gate: Any = None,
                 price: float | None = None):
        from lfgen.builder.options import BuildOptions
        from lfgen.builder.steps import build

        self.folder, self.root, self.experiment, self.settings = folder, root, experiment, settings
        self.width, self.say, self.outputs_dir = width, say, outputs_dir
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.trials: dict[str, Any] = {}  # run name -> optuna Trial not yet told
        self.reported: dict[str, int] = {}  # run name -> last step reported
        self.hopeless: str | None = None  # why no trial should start again (every one failed the same fixed way)
        self.disk_full: str | None = None  # a trial failed on a full disk: none starts until space is freed
        self.timed_out = False
        self.gate, self.price = gate, price  # --budget (lfgen.tuning.budget.Gate), the price its estimates use
        self.deferred: list[Any] = []  # trials asked but never laid out: the next to start (the budget checks them)
        self.budget_stop: str | None = None  # why the budget lets no trial start (said once, recorded in study.db)
        self.spent = False  # the measured spend reached the budget: the running trials stop, no trial is asked
        self._checked: tuple | None = None  # the runs' states the last refusal saw: nothing changed, no new check
        self._store: Store | None = None
        manifest = experiment.manifest
        self.options = BuildOptions.parse(**manifest.options)
        built = build(manifest.base, self.options)
        base_config = built.config
        self.base_rank = int(base_config.get("lora_rank", 8))
        for warning in eval_warnings(base_config, settings["pruner"]):
            say(f"warning: {warning}")
        self.grid = spaces.grid(settings["space"], str(folder / "experiment.yaml"), built.shape) \
            if settings["sampler"] == "grid" else None
        self.study = strategies.open_study(folder, manifest.name, settings, int(base_config.get("eval_steps") or 1))
        if rebuild(self.study, experiment, settings, root, base_rank=self.base_rank, grid=self.grid, say=say):
            # opened again: the sampler's seed counts the trials added back (a random sampler would repeat them)
            self.study = strategies.open_study(folder, manifest.name, settings, int(base_config.get("eval_steps") or 1))
        if self.grid is not None:
            self._cap_grid()
        self.sign = 1 if lower_is_better(settings["metric"]) else -1  # eval loss reported in the study's direction
        self._lay_out_killed()

    def _cap_grid(self) -> None:
        """--sampler grid: every combination once, in order, at most --trials of them. The grid is never listed (a
        space of 3.2M points would fill the memory): its size is the product of its keys' values, and each trial
        takes the next point no trial has had (``_next_point``) when it is asked."""
        size = math.prod(len(values) for values in self.grid.values())
        if size < self.settings["trials"]:
            self.say(f"the grid has {size:,} point(s); the study ends with {size:,} trial(s), not "
                     f"{self.settings['trials']:,}")
            self.settings["trials"] = size

    def _next_point(self) -> dict[str, Any] | None:
        """The first grid point, in order, that no trial has had yet (None: every point was asked); reads as many
        points as there are trials, never the whole grid."""
        import itertools

        seen = {tuple(repr(t.params.get(key)) for key in self.grid) for t in self.study.trials}
        for combo in itertools.product(*self.grid.values()):
            if tuple(map(repr, combo)) not in seen:
                return dict(zip(self.grid, combo))
        return None

    def _lay_out_killed(self) -> None:
        """Trials a killed tuner left RUNNING: those whose runs were laid out are resumed, evaluated or only handed
        back by the runner; those asked but never laid out (the tuner died before, or the budget stopped it there)
        are the first ``next`` gives, with the same parameters, once the budget allows."""
        optuna = studies.optuna_module()
        killed = [optuna.trial.Trial(self.study, t._trial_id) for t in self.study.trials
                  if t.state == optuna.trial.TrialState.RUNNING]
        known = {run.name for run in self.experiment.manifest.runs}
        laid = [t for t in killed if studies.run_name(t.number) in known]
        self.deferred = [t for t in killed if studies.run_name(t.number) not in known]
        if laid:
            self.say(f"{len(laid)} trial(s) were running when the last lfgen tune stopped: "
                     f"{', '.join(studies.run_name(t.number) for t in laid)}; resuming them with the same parameters")
        self._lay_out(laid)

    def _lay_out(self, trials: list[Any]) -> None:
        from lfgen.experiments.manifest import add_runs

        known = {run.name for run in self.experiment.manifest.runs}
        new = []
        for trial in trials:
            params = spaces.suggest(trial, self.settings["space"], self.grid)  # the same values again on a resume
            name = studies.run_name(trial.number)
            self.trials[name], self.reported[name] = trial, 0
            if name not in known:
                new.append(RunSpec(name, spaces.to_options(params, self.base_rank)))
        if new:
            self.experiment = add_runs(self.experiment, new, self.outputs_dir)

    # --- the runner's source -----------------------------------------------------------------------

    @_writes
    def opened(self, store: Store) -> list[str]:
        """Killed trials whose runs already have their outcome are told now; those that trained but were not scored
        (the metric is lfgen eval's) are the runner's to evaluate first."""
        self._store = store  # admit reads the runs' states from it
        left = []
        rows = {row.name: row for row in store.runs()}
        for name in list(self.trials):
            row = rows.get(name)
            if row is None or not row.state.finished:
                continue  # pending or interrupted: the runner resumes it and says how it ended
            if row.state is RunState.DONE and needs_eval(self.settings["metric"]) and \
                    not is_scored(self.root / row.output_dir):
                self.say(f"{name}: trained, but its evaluation did not finish; evaluating it now")
                left.append(name)
            else:
                self.ended(row, store.evaluation(name))
        return left

    @_writes
    def next(self, store: Store) -> str | None:
        """Ask the study for the next trial, lay it out and add its run; None once the budget or the time is spent
        (or every trial failed for a reason no parameter changes)."""
        optuna = studies.optuna_module()
        waiting = optuna.trial.TrialState.WAITING  # a trial enqueued (a grid point, a retry) and not yet asked
        asked = len([t for t in self.study.trials if t.state != waiting and not t.user_attrs.get(RETRIED)])
        if self.hopeless or self.disk_full or self.spent or (not self.deferred and asked >= self.settings["trials"]):
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if not self.timed_out:
                self.timed_out = True
                self.say(f"--timeout reached after {asked} trial(s); lfgen tune {self.experiment.manifest.name} "
                         "goes on")
            return None
        states = tuple(sorted((row.name, str(row.state)) for row in store.runs())) if self.gate is not None else ()
        if self.gate is not None and self._checked == states:
            return None  # refused before, and no trial has ended since: the answer is the same
        if self.deferred:
            trial = self.deferred.pop(0)
        else:
            if self.grid is not None and not any(t.state == waiting for t in self.study.trials):
                point = self._next_point()
                if point is None:
                    return None
                self.study.enqueue_trial(point)
            trial = self.study.ask()
        if self.gate is not None and not self._affordable(trial, store):
            self.deferred.insert(0, trial)  # asked, not laid out: the first to start when the budget allows
            self._checked = states
            return None
        self._lay_out([trial])
        name = studies.run_name(trial.number)
        entry = next(run for run in self.experiment.manifest.runs if run.name == name)
        store.add_run(name, _relative(self.experiment.path / entry.config, self.root), entry.output_dir)
        return name

    def _affordable(self, trial: Any, store: Store) -> bool:
        """Whether --budget allows *trial* to start now; when not, the stop is said (once no trial runs) and recorded."""
        from lfgen.experiments.manifest import plan_runs
        from lfgen.tuning import budget

        name = studies.run_name(trial.number)
        params = spaces.suggest(trial, self.settings["space"], self.grid)  # the values _lay_out will take
        spec = RunSpec(name, spaces.to_options(params, self.base_rank))
        manifest = self.experiment.manifest
        _, built = plan_runs(manifest.name, manifest.base, self.options, [spec], self.outputs_dir)
        cost, why, _ = budget.estimate(built[0][1], self.price)
        rows = store.runs()
        running = {row.name for row in rows if row.state is RunState.RUNNING}
        if cost is None:
            figures, ok = {}, False
            message = f"stopped by budget: {name} has no time estimate ({why}), so it cannot be afforded"
        else:
            ok, figures = self.gate.affordable(cost, self._runs(), running,
                                               {row.name for row in rows if row.state is RunState.DONE})
            message = budget.stop_message(manifest.name, name, figures)
        if ok:
            self.gate.estimates[name] = cost
            budget.clear_stop(self.study)
            self.budget_stop = None
            return True
        if not running and not self.budget_stop:  # final: nothing that runs could free the budget
            self.budget_stop = message
            budget.record_stop(self.study, message, figures, name)  # lfgen tune says it after the trials table
        return False

    def admit(self, name: str) -> bool:
        """A queued trial (interrupted, or laid out and never started) starts only when --budget can afford what it has
        left; one held back stays as it is, for the next lfgen tune."""
        if self.gate is None:
            return True
        entry, cost = self._laid_out_cost(name)
        if cost is None:
            return True  # no estimate of it: its spend so far is measured, and spent_out stops it at the budget
        states = {row.name: row.state for row in self._store.runs()} if self._store is not None else {}
        ok, figures = self.gate.affordable(cost, self._runs(), {n for n, s in states.items() if s is RunState.RUNNING},
                                           {n for n, s in states.items() if s is RunState.DONE}, name)
        from lfgen.tuning import budget

        if ok:  # it goes on: the stop recorded before (it, interrupted or waiting) no longer stands
            self.gate.admit(name, entry.output_dir)
            budget.clear_stop(self.study)
            self.budget_stop = None
        elif not self.budget_stop:
            self.budget_stop = budget.stop_message(self.experiment.manifest.name, name, figures)
            budget.record_stop(self.study, self.budget_stop, figures, name)
        return ok

    def _laid_out_cost(self, name: str) -> tuple[Any, Any]:
        """A laid-out trial's manifest entry and the budget's estimate of it (None when there is none)."""
        entry = next((run for run in self.experiment.manifest.runs if run.name == name), None)
        return entry, self.gate.cost_of(name, self.experiment.path / entry.config) if entry is not None else None

    def _resume_figures(self, name: str) -> dict[str, float]:
        """What the interrupted trial *name* needs to go on (next_gpu_hours, with this study's ratio so far), as
        admit() will reckon it when the study goes on; none without an estimate."""
        _, cost = self._laid_out_cost(name)
        if cost is None:
            return {}
        done = {row.name for row in self._store.runs() if row.state is RunState.DONE} if self._store else set()
        figures = self.gate.affordable(cost, self._runs(), set(), done, name)[1]
        return {key: figures[key] for key in ("next_gpu_hours", "study_ratio", "measured_trials")}

    def _running(self) -> int:
        """How many trials train now (a trial evaluating, or held back, has no process to stop)."""
        if self._store is None:
            return len(self.trials)
        return sum(row.state is RunState.RUNNING for row in self._store.runs())

    def _runs(self) -> list[tuple[str, Path, str]]:
        return [(run.name, self.experiment.path / run.config, run.output_dir) for run in self.experiment.manifest.runs]

    @_writes
    def progress(self, name: str, progress: Progress) -> bool | str:
        """Report a new eval loss at its step; True when the pruner gives the run up; a text when the budget is spent
        (the run stops resumable)."""
        if self.gate is not None and (why := self.gate.spent_out([(n, o) for n, _, o in self._runs()],
                                                                 self._running)):
            self.spent = True
            if not self.budget_stop:  # said after the trials table and recorded, as a refusal to start one is
                from lfgen.tuning import budget

                self.budget_stop = f"stopped by budget: {why}"
                figures = {**(self.gate.stopped or {}), **self._resume_figures(name), "interrupted": True}
                budget.record_stop(self.study, self.budget_stop, figures, name)
            return why
        trial = self.trials.get(name)
        value = finite(progress.eval_loss)
        if trial is None or value is None or progress.eval_step <= self.reported[name]:
            return False
        self.reported[name] = progress.eval_step
        trial.report(self.sign * value, progress.eval_step)
        last = progress.total and progress.eval_step >= progress.total  # nothing left to save
        return not last and trial.should_prune()

    @_writes
    def ended(self, row: RunRow, evaluation: tuple[str, str | None] | None) -> None:
        """Tell the study how the trial's run ended."""
        trial = self.trials.pop(row.name, None)
        if trial is None:
            return
        states = studies.optuna_module().trial.TrialState
        out = self.root / row.output_dir
        trial.set_user_attr("steps", steps_logged(out))
        metric = self.settings["metric"]
        if row.state is RunState.PRUNED:
            self.study.tell(trial, state=states.PRUNED)
            return
        if row.state is RunState.FAILED:
            why = f"{(row.detail or '').splitlines()[0] if row.detail else ''}"
            if row.reason == "disk":  # no fault of its parameters: tried again with them once space is freed
                trial.set_user_attr("why", f"disk: {why} (its parameters are tried again; it does not count)")
                trial.set_user_attr(RETRIED, True)
                self.study.enqueue_trial(trial.params)
                self.disk_full = (f"{row.name} failed: {why}; no new trial starts on a full disk: free space, then "
                                  f"lfgen tune {self.experiment.manifest.name} tries its parameters again")
            else:
                trial.set_user_attr("why", f"{row.reason}: {why}")
        elif (value := finite(metric_value(out, metric))) is not None and math.isfinite(value):
            self.study.tell(trial, value)
            return
        else:
            where = f"{out}/eval/ (lfgen eval)" if needs_eval(metric) else f"{out}/all_results.json"
            failed = f"lfgen eval failed ({(evaluation[1] or '?').splitlines()[0]}); " \
                if evaluation and evaluation[0] == "failed" else ""
            trial.set_user_attr("why", f"{failed}no finite {metric} in {where}")
        self.study.tell(trial, state=states.FAIL)
        self._check_hopeless()  # only a failure can make the study hopeless

    def _check_hopeless(self) -> None:
        """Every trial so far (at least as many as run at once) failed for a reason no parameter changes (the
        config, the model, the Hub): start no more rather than spend the budget failing the same way."""
        rows = [row for row in studies.trial_rows(self.study) if row["state"] not in ("running", "waiting")]
        fixed = [row for row in rows if row["state"] == "failed" and (row["why"] or "").split(":")[0] in FIXED_CAUSES]
        if rows and len(fixed) == len(rows) and len(rows) >= min(self.width, self.settings["trials"]):
            self.hopeless = (f"{rows[-1]['run']} failed ({rows[-1]['why']}), as every trial so far; the study stops "
                             f"(fix the base, then lfgen tune {self.experiment.manifest.name} resumes it)")


def eval_warnings(config: dict[str, Any], pruner: str) -> list[str]:
    """Why the pruner may not be able to act on these runs (no eval during training, or too few evals)."""
    if pruner == "none":
        return []
    evaluates = config.get("eval_strategy") == "steps" and (config.get("val_size") or config.get("eval_dataset"))
    max_steps = int(config.get("max_steps") or 0)
    hint = f"--set eval_steps={max(1, max_steps // 4)}" if max_steps > 0 else "--set eval_steps=<a quarter of the steps>"
    if not evaluates:
        return [f"the runs do not evaluate during training (eval_strategy: {config.get('eval_strategy', 'no')}, "
                f"val_size: {config.get('val_size')}): the pruner cannot act; add --set eval_strategy=steps "
                f"--set val_size=0.1 {hint}"]
    eval_steps = int(config.get("eval_steps") or 0)
    if max_steps > 0 and (eval_steps <= 0 or eval_steps * 2 > max_steps):
        return [f"eval every {eval_steps} of {max_steps} steps: fewer than two evals before the end, so the pruner "
                f"cannot act; {hint} allows it"]
    return []


def _relative(path: Path, root: Path) -> str:
    import os

    return os.path.relpath(path, root)
