"""``lfgen tune``: Optuna ask-and-tell over ordinary runs of one experiment.

A trial is a run: ``runs/trial-NNN.yaml`` built on the experiment's base by the same pipeline as a sweep's runs
(alpha follows rank, targets resolve, the batch fits the GPU), trained by the same runner (OOM retry, NaN
watchdog, GPU slots, progress, Ctrl-C). The runner's ``on_progress`` hook reports each new eval loss to the
trial at its step and stops the run when the pruner says so. Order of writes, so that ``kill -9`` at any moment
loses nothing and repeats nothing: ask (trial RUNNING in study.db) -> runs/<trial>.yaml and the manifest -> train
(state.sqlite) -> tell. On the next ``lfgen tune NAME`` (holding the experiment's lock, so no other tuner is
alive) every trial still RUNNING is a killed one: its run is laid out from the trial's own parameters if it was
not yet, resumed from its last checkpoint by the runner, or, when it had finished, only told (with an lfgen eval
metric, evaluated first if its evaluation had not finished: lfgen/tuning/scoring.py).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.experiments.sweeps import RunSpec
from lfgen.layout import BEST_CONFIG, MANIFEST, STATE, experiment_lock
from lfgen.runs.metrics import lower_is_better, needs_eval
from lfgen.runs.metrics import value as metric_value
from lfgen.runs.ranking import finite
from lfgen.runs.reader import steps_logged
from lfgen.tuning import scoring, strategies
from lfgen.tuning import space as spaces
from lfgen.runs import study as studies

SETTINGS = ("space", "trials", "sampler", "pruner", "metric", "seed", *scoring.EVAL_SETTINGS)
CHANGEABLE = ("trials",)  # what a resume may change (with --gpus and --timeout, which are not recorded)


@dataclass
class TuneResult:
    experiment: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_config: Path | None = None
    lines: list[str] = field(default_factory=list)  # --dry-run: the plan


def parse_duration(text: str | None) -> float | None:
    """``90s``, ``30m``, ``2h``, ``1h30m`` or plain seconds -> seconds."""
    if text is None:
        return None
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not parts or not any(parts.groups()):
        raise InputError(f"--timeout: {text!r} is not a duration; e.g. 90s, 30m, 2h, 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


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


def _settings(space: dict[str, Any], trials: int | None, sampler: str | None, pruner: str | None,
              metric: str | None, seed: int | None, generation: dict[str, int | None]) -> dict[str, Any]:
    settings = {"axis": "tune", "space": space, "trials": 20 if trials is None else trials, "sampler": sampler or "tpe",
                "pruner": pruner or "asha", "metric": metric or "eval_loss", "seed": 0 if seed is None else seed}
    settings.update(scoring.eval_settings(settings["metric"], generation.get("max_samples"),
                                          generation.get("max_new_tokens")))
    if settings["trials"] < 1:
        raise InputError(f"--trials: at least 1 (got {settings['trials']})")
    if settings["sampler"] not in strategies.SAMPLERS:
        raise InputError(f"--sampler: {settings['sampler']!r}; choose {', '.join(strategies.SAMPLERS)}")
    if settings["pruner"] not in strategies.PRUNERS:
        raise InputError(f"--pruner: {settings['pruner']!r}; choose {', '.join(strategies.PRUNERS)}")
    return settings


def _refuse_changes(name: str, recorded: dict[str, Any], given: dict[str, Any]) -> None:
    changed = [key for key, value in given.items() if value is not None and key not in CHANGEABLE
               and recorded.get(key) != value]
    if changed:
        raise InputError(f"{name}: the study is already set up ({', '.join(f'{k}={recorded.get(k)!r}' for k in changed)}"
                         f"); lfgen tune {name} resumes it (only --trials, --gpus and --timeout may change), or tune "
                         "under a new name")


def tune(name: str, *, base: str | None = None, options: Any = None, space: str | None = None,
         space_spec: dict[str, Any] | None = None,
         trials: int | None = None, sampler: str | None = None, pruner: str | None = None, metric: str | None = None,
         seed: int | None = None, timeout: str | None = None, gpus: list[int] | None = None, dry_run: bool = False,
         max_samples: int | None = None, max_new_tokens: int | None = None,
         reporter: Any = None, say: Callable[[str], None] = lambda _: None, command: list[str] | None = None,
         experiments_dir: str = "experiments", outputs_dir: str = "outputs", runner_options: dict[str, Any] | None = None
         ) -> TuneResult:
    """Start or resume the study of experiment *name* (see the module doc); returns its trials and best.
    *space* is a space file (None: the seeds' default); *space_spec* a space already made (lfgen tune --staged).
    *max_samples* and *max_new_tokens*: how each trial is evaluated when the metric is lfgen eval's."""
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments import manifest as manifests
    from lfgen.runs.manifest import load as load_manifest
    from lfgen.experiments.sweeps import check_name

    folder = Path(experiments_dir) / check_name(name)
    seconds = parse_duration(timeout)
    if (folder / MANIFEST).is_file():
        experiment = load_manifest(folder)
        recorded = experiment.manifest.sweep
        if recorded.get("axis") != "tune":
            raise InputError(f"{folder}: an experiment of lfgen sweep ({recorded.get('axis')}), not of lfgen tune; "
                             "tune under a new name")
        if base is not None and base != experiment.manifest.base:
            raise InputError(f"{name}: the study is already set up on --base {experiment.manifest.base}; lfgen tune "
                             f"{name} resumes it, or tune under a new name")
        given = {"sampler": sampler, "pruner": pruner, "metric": metric, "seed": seed,
                 "space": spaces.load(space) if space else None, "max_samples": max_samples,
                 "max_new_tokens": max_new_tokens}
        if max_samples is not None or max_new_tokens is not None:
            scoring.eval_settings(recorded.get("metric", "eval_loss"), max_samples, max_new_tokens)
        _refuse_changes(name, recorded, given)
        if trials is not None and trials < 1:
            raise InputError(f"--trials: at least 1 (got {trials})")
        settings = {**recorded, **({"trials": trials} if trials is not None else {})}
    else:
        if base is None:
            raise InputError(f"{name}: no tune experiment in {experiments_dir}/; start one with lfgen tune {name} "
                             "--base PRESET|FILE")
        options = options or BuildOptions()
        where = space or spaces.DEFAULT
        loaded = dict(space_spec) if space_spec is not None else spaces.load(space)  # space_spec: --staged's
        settings = _settings(loaded, trials, sampler, pruner, metric, seed,
                             {"max_samples": max_samples, "max_new_tokens": max_new_tokens})
        if settings["sampler"] == "grid":
            spaces.grid(settings["space"], where)
        spaces.check_builds(settings["space"], base, options, where)
        if dry_run:
            return TuneResult(folder, lines=_plan_lines(name, base, options, settings, gpus))
        experiment = manifests.write(name, base, options, [], settings, experiments_dir=experiments_dir,
                                     outputs_dir=outputs_dir, allow_empty=True)
    if dry_run:
        return TuneResult(folder, lines=_plan_lines(name, experiment.manifest.base,
                                                    BuildOptions.parse(**experiment.manifest.options), settings, gpus))
    root = (folder / experiment.manifest.root).resolve()
    loop = _Loop(folder, root, experiment, settings, gpus, reporter, say, command, outputs_dir, runner_options or {})
    with manifests_lock(folder), contextlib.chdir(root):
        loop.folder = Path(folder).resolve()
        return loop.run(seconds)


def manifests_lock(folder: Path) -> Any:
    from lfgen.runs.lock import Lock

    return Lock(experiment_lock(folder), f"experiment {folder}", holder="lfgen tune", share=True)


def _plan_lines(name: str, base: str, options: Any, settings: dict[str, Any], gpus: list[int] | None) -> list[str]:
    from lfgen.builder.steps import build

    config = build(base, options).config
    lines = [f"{name}: {settings['trials']} trial(s) on {base}, sampler {settings['sampler']}, pruner "
             f"{settings['pruner']}, metric {settings['metric']} "
             f"({'lowest' if lower_is_better(settings['metric']) else 'highest'} wins), seed {settings['seed']}, "
             f"{len(gpus) if gpus else 1} at a time",
             "space:"]
    lines += [f"  {key}: {spec}" for key, spec in settings["space"].items()]
    if needs_eval(settings["metric"]):
        options = scoring.options_of(settings)
        lines.append(f"each trial evaluated after it trains: greedy, {options.max_new_tokens} new tokens, "
                     f"{options.max_samples or 'all the'} held-out row(s)")
    lines += [f"warning: {w}" for w in eval_warnings(config, settings["pruner"])]
    return lines


class _Loop:
    """One lfgen tune process: the experiment's lock held, trials asked, trained and told until the budget."""

    def __init__(self, folder: Path, root: Path, experiment: Any, settings: dict[str, Any], gpus: list[int] | None,
                 reporter: Any, say: Callable[[str], None], command: list[str] | None, outputs_dir: str,
                 runner_options: dict[str, Any]):
        self.folder, self.root, self.experiment, self.settings = folder, root, experiment, settings
        self.gpus, self.reporter, self.say, self.command = gpus, reporter, say, command
        self.outputs_dir, self.runner_options = outputs_dir, runner_options
        self.trials: dict[str, Any] = {}  # run name -> optuna Trial in flight
        self.evaluated: dict[str, Any] = {}  # run name -> the Outcome of its lfgen eval in this process
        self.reported: dict[str, int] = {}  # run name -> last step reported

    # --- setup -------------------------------------------------------------------------------------

    def _open(self) -> None:
        from lfgen.builder.options import BuildOptions
        from lfgen.builder.steps import build

        manifest = self.experiment.manifest
        self.options = BuildOptions.parse(**manifest.options)
        base_config = build(manifest.base, self.options).config
        self.base_rank = int(base_config.get("lora_rank", 8))
        for warning in eval_warnings(base_config, self.settings["pruner"]):
            self.say(f"warning: {warning}")
        space = self.settings["space"]
        self.grid = spaces.grid(space, str(self.folder / MANIFEST)) if self.settings["sampler"] == "grid" else None
        self.study = strategies.open_study(self.folder, manifest.name, self.settings,
                                           int(base_config.get("eval_steps") or 1))
        if self.grid is not None:
            self._enqueue_grid()
        self.sign = 1 if lower_is_better(self.settings["metric"]) else -1  # eval loss reported in the study's direction

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

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, seconds: float | None) -> TuneResult:
        from lfgen.training.slots import gpu_slots

        self._open()
        optuna = studies.optuna_module()
        executor = self.runner_options.get("executor")  # --ray: as many trials at once as the cluster holds
        width = len(executor.slots(self.gpus, 1)) if executor is not None else len(gpu_slots(self.gpus, 1))
        started = time.monotonic()
        killed = [t for t in self.study.trials if t.state == optuna.trial.TrialState.RUNNING]
        if killed:
            self.say(f"{len(killed)} trial(s) were running when the last lfgen tune stopped: "
                     f"{', '.join(studies.run_name(t.number) for t in killed)}; resuming them with the same parameters")
        pending = [optuna.trial.Trial(self.study, t._trial_id) for t in killed]
        while True:
            room = self.settings["trials"] - len([t for t in self.study.trials  # enqueued grid points wait
                                                  if t.state != optuna.trial.TrialState.WAITING])
            out_of_time = seconds is not None and time.monotonic() - started >= seconds
            if not pending and (room <= 0 or out_of_time):
                if out_of_time and room > 0:
                    self.say(f"--timeout reached after {len(self.study.trials)} trial(s); lfgen tune "
                             f"{self.experiment.manifest.name} goes on")
                break
            batch = pending or [self.study.ask() for _ in range(min(width, room))]
            pending = []
            self._train(batch)
            self._stop_if_hopeless()
        return self._result()

    def _train(self, batch: list[Any]) -> None:
        from lfgen.experiments.manifest import add_runs
        from lfgen.training.runner import Runner
        from lfgen.training.target import resolve

        known = {run.name for run in self.experiment.manifest.runs}
        new = []
        for trial in batch:
            params = spaces.suggest(trial, self.settings["space"], self.grid)  # the same values again on a resume
            name = studies.run_name(trial.number)
            self.trials[name], self.reported[name] = trial, 0
            if name not in known:
                new.append(RunSpec(name, spaces.to_options(params, self.base_rank)))
        if new:
            self.experiment = add_runs(self.experiment, new, self.outputs_dir)
        options, hook = dict(self.runner_options), None
        if needs_eval(self.settings["metric"]):
            hook = scoring.evaluator(self.root, self.say, scoring.options_of(self.settings), self.evaluated,
                                     executor=options.get("executor"), experiment=self.experiment.manifest.name)
            options["after_done"] = hook
        runner = Runner(resolve(str(self.folder)), self.reporter, gpus=self.gpus, command=self.command,
                        on_progress=self._progress, **options)
        try:
            runner.run()
            if hook is not None:  # trained under a tuner that was killed before it scored them
                left = [name for name in self.trials if name not in self.evaluated]
                scoring.evaluate_left(self.folder / STATE, self.root, left, hook, self.gpus, self.say)
        finally:
            self._tell_finished()

    def _progress(self, name: str, progress: Any) -> str | None:
        """The runner's hook: report a new eval loss at its step; "prune" when the pruner gives the run up."""
        trial = self.trials.get(name)
        value = finite(progress.eval_loss)
        if trial is None or value is None or progress.eval_step <= self.reported[name]:
            return None
        self.reported[name] = progress.eval_step
        trial.report(self.sign * value, progress.eval_step)
        last = progress.total and progress.eval_step >= progress.total  # nothing left to save
        return "prune" if not last and trial.should_prune() else None

    def _tell_finished(self) -> None:
        """Tell the study how each trial's run ended; a run not ended (Ctrl-C) stays for the next resume."""
        from lfgen.training.evaluate import is_scored
        from lfgen.runs.store import read_rows

        optuna = studies.optuna_module()
        states = optuna.trial.TrialState
        rows = read_rows(self.folder / STATE)
        entries = {run.name: run for run in self.experiment.manifest.runs}
        for name, trial in list(self.trials.items()):
            row = rows.get(name)
            if row is None or row.state not in ("done", "failed", "pruned"):
                continue
            out = self.root / entries[name].output_dir
            scored_here = name in self.evaluated or is_scored(out)
            if row.state == "done" and needs_eval(self.settings["metric"]) and not scored_here:
                continue  # stopped during or before its evaluation: the next lfgen tune evaluates it, then tells
            trial.set_user_attr("steps", steps_logged(out))
            if row.state == "pruned":
                self.study.tell(trial, state=states.PRUNED)
            elif row.state == "failed":
                trial.set_user_attr("why", f"{row.reason}: {(row.detail or '').splitlines()[0] if row.detail else ''}")
                self.study.tell(trial, state=states.FAIL)
            else:
                value = finite(metric_value(out, self.settings["metric"]))
                if value is None or not math.isfinite(value):
                    where = f"{out}/eval/ (lfgen eval)" if needs_eval(self.settings["metric"]) \
                        else f"{out}/all_results.json"
                    outcome = self.evaluated.get(name)
                    failed = f"lfgen eval failed ({(outcome.detail or '?').splitlines()[0]}); " \
                        if outcome and outcome.status == "failed" else ""
                    trial.set_user_attr("why", f"{failed}no finite {self.settings['metric']} in {where}")
                    self.study.tell(trial, state=states.FAIL)
                else:
                    self.study.tell(trial, value)
            del self.trials[name]

    def _stop_if_hopeless(self) -> None:
        """Every trial so far failed for a reason no parameter changes (the config, the model, the Hub, the disk):
        stop rather than spend the budget failing the same way."""
        from lfgen.errors import RunError

        rows = studies.trial_rows(self.study)
        if not rows or any(row["state"] != "failed" for row in rows):
            return
        fixed = [row for row in rows if (row["why"] or "").split(":")[0] in ("config", "model", "hub", "disk")]
        if len(fixed) == len(rows):
            raise RunError(f"{rows[-1]['run']} failed ({rows[-1]['why']}), as every trial so far; the study stops "
                           f"(fix the base, then lfgen tune {self.experiment.manifest.name} resumes it)")

    # --- the result --------------------------------------------------------------------------------

    def _result(self) -> TuneResult:
        rows = studies.trial_rows(self.study)
        result = TuneResult(self.folder, rows=rows)
        from lfgen.runs.ranking import best

        result.best = best([r for r in rows if r["state"] == "complete"], lambda r: r["value"], self.settings["metric"])
        if result.best is not None:
            result.best_config = self._write_best(result.best)
        return result

    def _write_best(self, row: dict[str, Any]) -> Path:
        """best.yaml: the best trial's full config, built as its run was, rooted for the experiment folder."""
        from lfgen.builder.render import render_build
        from lfgen.experiments.manifest import plan_runs
        from lfgen.yamlio import write_atomic

        entry = next(run for run in self.experiment.manifest.runs if run.name == row["run"])
        _, built = plan_runs(self.experiment.manifest.name, self.experiment.manifest.base, self.options,
                             [RunSpec(entry.name, entry.overrides)], self.outputs_dir)
        text = render_build(built[0][1], command="preset", folder=self.folder)
        header = (f"# lfgen tune {self.experiment.manifest.name}: the best trial, {row['run']} "
                  f"({self.settings['metric']} {row['value']:.6g}); train it with lfgen run, or start the next stage "
                  f"with lfgen sweep AXIS --base {self.folder.name}/{BEST_CONFIG}\n")
        return write_atomic(self.folder / BEST_CONFIG, header + text)
