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

FIXED_CAUSES = ("config", "model", "hub", "disk")  # failures no parameter of the space changes


class Trials:
    """The trials of one lfgen tune process (the experiment's lock held): the runner's source."""

    def __init__(self, folder: Path, root: Path, experiment: Any, settings: dict[str, Any], *, width: int,
                 seconds: float | None, say: Callable[[str], None], outputs_dir: str):
        from lfgen.builder.options import BuildOptions
        from lfgen.builder.steps import build

        self.folder, self.root, self.experiment, self.settings = folder, root, experiment, settings
        self.width, self.say, self.outputs_dir = width, say, outputs_dir
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.trials: dict[str, Any] = {}  # run name -> optuna Trial not yet told
        self.reported: dict[str, int] = {}  # run name -> last step reported
        self.hopeless: str | None = None  # why no trial should start again (every one failed the same fixed way)
        self.timed_out = False
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
        if self.grid is not None:
            self._enqueue_grid()
        self.sign = 1 if lower_is_better(settings["metric"]) else -1  # eval loss reported in the study's direction
        self._lay_out_killed()

    def _enqueue_grid(self) -> None:
        """--sampler grid: every combination once, in order (at most --trials of them)."""
        import itertools

        points = [dict(zip(self.grid, combo)) for combo in itertools.product(*self.grid.values())]
        if len(points) < self.settings["trials"]:
            self.say(f"the grid has {len(points)} point(s); the study ends with {len(points)} trial(s), not "
                     f"{self.settings['trials']}")
            self.settings["trials"] = len(points)
        if not self.study.trials:
            for point in points[:self.settings["trials"]]:
                self.study.enqueue_trial(point)

    def _lay_out_killed(self) -> None:
        """Trials a killed tuner left RUNNING: their runs laid out (from the trials' own parameters) if they were
        not yet; the runner then resumes, evaluates or only hands back each one."""
        optuna = studies.optuna_module()
        killed = [optuna.trial.Trial(self.study, t._trial_id) for t in self.study.trials
                  if t.state == optuna.trial.TrialState.RUNNING]
        if killed:
            self.say(f"{len(killed)} trial(s) were running when the last lfgen tune stopped: "
                     f"{', '.join(studies.run_name(t.number) for t in killed)}; resuming them with the same parameters")
        self._lay_out(killed)

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

    def opened(self, store: Store) -> list[str]:
        """Killed trials whose runs already have their outcome are told now; those that trained but were not scored
        (the metric is lfgen eval's) are the runner's to evaluate first."""
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

    def next(self, store: Store) -> str | None:
        """Ask the study for the next trial, lay it out and add its run; None once the budget or the time is spent
        (or every trial failed for a reason no parameter changes)."""
        optuna = studies.optuna_module()
        asked = len([t for t in self.study.trials if t.state != optuna.trial.TrialState.WAITING])  # grid points wait
        if self.hopeless or asked >= self.settings["trials"]:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if not self.timed_out:
                self.timed_out = True
                self.say(f"--timeout reached after {asked} trial(s); lfgen tune {self.experiment.manifest.name} "
                         "goes on")
            return None
        trial = self.study.ask()
        self._lay_out([trial])
        name = studies.run_name(trial.number)
        entry = next(run for run in self.experiment.manifest.runs if run.name == name)
        store.add_run(name, _relative(self.experiment.path / entry.config, self.root), entry.output_dir)
        return name

    def progress(self, name: str, progress: Progress) -> bool:
        """Report a new eval loss at its step; True when the pruner gives the run up."""
        trial = self.trials.get(name)
        value = finite(progress.eval_loss)
        if trial is None or value is None or progress.eval_step <= self.reported[name]:
            return False
        self.reported[name] = progress.eval_step
        trial.report(self.sign * value, progress.eval_step)
        last = progress.total and progress.eval_step >= progress.total  # nothing left to save
        return not last and trial.should_prune()

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
            trial.set_user_attr("why", f"{row.reason}: {(row.detail or '').splitlines()[0] if row.detail else ''}")
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
        config, the model, the Hub, the disk): start no more rather than spend the budget failing the same way."""
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
