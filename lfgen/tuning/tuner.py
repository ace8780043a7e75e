"""``lfgen tune``: Optuna ask-and-tell over ordinary runs of one experiment.

A trial is a run: ``runs/trial-NNN.yaml`` built on the experiment's base by the same pipeline as a sweep's runs
(alpha follows rank, targets resolve, the batch fits the GPU), trained by the same runner (OOM retry, NaN
watchdog, GPU slots, progress, Ctrl-C). The runner pulls the trials as slots free (lfgen.tuning.trials: its run
source): Optuna is asked for the next trial the moment a slot frees, each new eval loss is reported at its step,
the pruner stops a run that is behind, and each trial is told as its run ends. This module sets the study up
(new, or resumed with its recorded settings), plans a --dry-run and writes best.yaml.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfgen.errors import InputError
from lfgen.experiments.sweeps import RunSpec
from lfgen.layout import BEST_CONFIG, MANIFEST, experiment_lock
from lfgen.runs import study as studies
from lfgen.runs.metrics import check as check_metric
from lfgen.runs.metrics import lower_is_better, needs_eval
from lfgen.runs.ranking import best
from lfgen.tuning import scoring, strategies
from lfgen.tuning import space as spaces
from lfgen.tuning.trials import eval_warnings

if TYPE_CHECKING:
    from lfgen.training.executor import Executor

SETTINGS = ("space", "trials", "sampler", "pruner", "metric", "seed", *scoring.EVAL_SETTINGS)
CHANGEABLE = ("trials", "budget")  # what a resume may change (with --gpus and --timeout, which are not recorded)


@dataclass
class TuneResult:
    experiment: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_config: Path | None = None
    lines: list[str] = field(default_factory=list)  # --dry-run: the plan
    cost: Any = None  # --dry-run: the trials' GPU-hours and cost (lfgen.experiments.costs.PlanCost)
    budget_stop: str | None = None  # why --budget let no further trial start
    failure: str | None = None  # why the study has no best trial (lfgen tune then exits 1, after the table)


def parse_duration(text: str | None) -> float | None:
    """``90s``, ``30m``, ``2h``, ``1h30m`` or plain seconds -> seconds."""
    if text is None:
        return None
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not parts or not any(parts.groups()):
        raise InputError(f"--timeout: {text!r} is not a duration; e.g. 90s, 30m, 2h, 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _settings(space: dict[str, Any], trials: int | None, sampler: str | None, pruner: str | None,
              metric: str | None, seed: int | None, generation: dict[str, int | None]) -> dict[str, Any]:
    settings = {"axis": "tune", "space": space, "trials": 20 if trials is None else trials, "sampler": sampler or "tpe",
                "pruner": pruner or "asha", "metric": check_metric(metric or "eval_loss"),
                "seed": 0 if seed is None else seed}
    settings.update(scoring.eval_settings(settings["metric"], generation.get("max_samples"),
                                          generation.get("max_new_tokens")))
    if settings["trials"] < 1:
        raise InputError(f"--trials: at least 1 (got {settings['trials']})")
    check_seed(settings["seed"])
    if settings["sampler"] not in strategies.SAMPLERS:
        raise InputError(f"--sampler: {settings['sampler']!r}; choose {', '.join(strategies.SAMPLERS)}")
    if settings["pruner"] not in strategies.PRUNERS:
        raise InputError(f"--pruner: {settings['pruner']!r}; choose {', '.join(strategies.PRUNERS)}")
    return settings


def check_seed(seed: int) -> int:
    """The sampler's seed: Optuna's samplers take 0 to 2**32 - 1 (numpy's); refused before anything is written."""
    if not 0 <= seed < strategies.SEEDS:
        raise InputError(f"--seed: must be a whole number from 0 to {strategies.SEEDS - 1} (got {seed})")
    return seed


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
         experiments_dir: str = "experiments", outputs_dir: str = "outputs", executor: Executor | None = None,
         budget: float | None = None, price: float | None = None) -> TuneResult:
    """Start or resume the study of experiment *name* (see the module doc); returns its trials and best.
    *space* is a space file (None: the seeds' default); *space_spec* a space already made (lfgen tune --staged).
    *max_samples* and *max_new_tokens*: how each trial is evaluated when the metric is lfgen eval's. *executor*:
    where trials train and are evaluated (default: this machine, one trial per GPU of *gpus*). *budget*: GPU-hours
    the whole study may use (lfgen.tuning.budget; recorded with the study); *price*: USD per GPU-hour of the
    estimates' cost."""
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments import manifest as manifests
    from lfgen.runs.manifest import load as load_manifest
    from lfgen.experiments.sweeps import check_name
    from lfgen.tuning.budget import check_budget

    if budget is not None:
        check_budget(budget)  # bad input: before anything is read or written
    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")
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
        if metric is not None:
            check_metric(metric)
        if seed is not None:
            check_seed(seed)
        given = {"sampler": sampler, "pruner": pruner, "metric": metric, "seed": seed,
                 "space": spaces.load(space) if space else None, "max_samples": max_samples,
                 "max_new_tokens": max_new_tokens}
        if max_samples is not None or max_new_tokens is not None:
            scoring.eval_settings(recorded.get("metric", "eval_loss"), max_samples, max_new_tokens)
        _refuse_changes(name, recorded, given)
        if trials is not None and trials < 1:
            raise InputError(f"--trials: at least 1 (got {trials})")
        settings = {**recorded, **({"trials": trials} if trials is not None else {}),
                    **({"budget": budget} if budget is not None else {})}
        if settings.get("budget") is not None:
            _check_estimable(experiment.manifest.base, BuildOptions.parse(**experiment.manifest.options), price)
    else:
        if base is None:
            raise InputError(f"{name}: no tune experiment in {experiments_dir}/; start one with lfgen tune {name} "
                             "--base PRESET|FILE")
        from lfgen.builder.steps import build

        options = options or BuildOptions()
        where = space or spaces.DEFAULT
        shape = build(base, options).shape  # a DPO base searches pref_beta and its own band, tuned by its metric
        loaded = dict(space_spec) if space_spec is not None else spaces.load(space, shape)  # space_spec: --staged's
        settings = _settings(loaded, trials, sampler, pruner, metric or shape.objective, seed,
                             {"max_samples": max_samples, "max_new_tokens": max_new_tokens})
        if budget is not None:
            settings["budget"] = budget
            _check_estimable(base, options, price)
        if settings["sampler"] == "grid":
            spaces.grid(settings["space"], where, shape)
        spaces.check_builds(settings["space"], base, options, where)
        if dry_run:
            return _dry_run(folder, name, base, options, settings, gpus, price)
        # Another lfgen tune of this name may have set it up since the look above (or the folder is not a study).
        taken = (f"{name}: {folder} already exists (another lfgen tune set the study up meanwhile, or the folder "
                 f"is not a tune experiment); lfgen tune {name} resumes a study, or tune under a new name")
        experiment = manifests.write(name, base, options, [], settings, experiments_dir=experiments_dir,
                                     outputs_dir=outputs_dir, allow_empty=True, command="lfgen tune", exists=taken)
    if dry_run:
        return _dry_run(folder, name, experiment.manifest.base, BuildOptions.parse(**experiment.manifest.options),
                        settings, gpus, price)
    root = (folder / experiment.manifest.root).resolve()
    with manifests_lock(folder), contextlib.chdir(root):
        if settings.get("budget") != experiment.manifest.sweep.get("budget"):  # a resume's new budget is kept
            from lfgen.runs.manifest import save

            experiment = save(experiment.path, experiment.manifest.model_copy(
                update={"sweep": {**experiment.manifest.sweep, "budget": settings["budget"]}}))
        return _session(folder.resolve(), root, experiment, settings, seconds, gpus=gpus, executor=executor,
                        reporter=reporter, say=say, command=command, outputs_dir=outputs_dir, price=price)


def _check_estimable(base: str, options: Any, price: float | None) -> None:
    """--budget needs a time estimate of a trial; without one it is refused before anything starts."""
    from lfgen.builder.steps import build
    from lfgen.tuning.budget import estimate

    cost, why, _ = estimate(build(base, options), price)
    if cost is None:
        raise InputError(f"--budget: lfgen cannot estimate a trial's time ({why}); a budget needs that estimate "
                         "(a known model, --samples or --dataset-dir, and --gpu or this machine's device)")


def _dry_run(folder: Path, name: str, base: str, options: Any, settings: dict[str, Any], gpus: list[int] | None,
             price: float | None) -> TuneResult:
    from lfgen.builder.steps import build
    from lfgen.experiments.costs import plan_cost

    cost = plan_cost([("each trial", build(base, options))], price, copies=settings["trials"])
    lines = _plan_lines(name, base, options, settings, gpus)
    if settings.get("budget") is not None and cost.known:
        each = cost.known[0][1]
        high = each.time["high_s"] * each.num_gpus / 3600
        lines.append(f"budget: {settings['budget']:g} GPU-hours: room for about {int(settings['budget'] // high)} of "
                     f"the {settings['trials']} trial(s) at the estimate's high end ({high:.3g} GPU-hours each); the "
                     "study never starts a trial it cannot afford, and stops resumable")
    return TuneResult(folder, lines=lines, cost=cost)


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


def _session(folder: Path, root: Path, experiment: Any, settings: dict[str, Any], seconds: float | None, *,
             gpus: list[int] | None, executor: Executor | None, reporter: Any, say: Callable[[str], None],
             command: list[str] | None, outputs_dir: str, price: float | None = None) -> TuneResult:
    """One lfgen tune process, the experiment's lock held: the runner trains the trials as Optuna gives them, one
    per free slot, each told as it ends (lfgen.tuning.trials); the result read back from the study."""
    from lfgen.errors import RunError
    from lfgen.training.executor import LocalExecutor
    from lfgen.training.runner import Runner
    from lfgen.training.target import resolve
    from lfgen.tuning.trials import Trials

    executor = executor or LocalExecutor()
    gate = None
    if settings.get("budget") is not None:
        from lfgen.layout import STATE
        from lfgen.tuning.budget import Gate

        gate = Gate(settings["budget"], root, folder / STATE, price)
    trials = Trials(folder, root, experiment, settings, width=len(executor.slots(gpus, 1)), seconds=seconds, say=say,
                    outputs_dir=outputs_dir, gate=gate, price=price)
    evaluations = executor.evaluations(experiment.manifest.name, root, scoring.options_of(settings)) \
        if needs_eval(settings["metric"]) else None
    runner = Runner(resolve(str(folder)), reporter, gpus=gpus, command=command, executor=executor,
                    evaluations=evaluations)
    runner.run(source=trials)
    if trials.hopeless or trials.disk_full:
        raise RunError(trials.hopeless or trials.disk_full)
    result = _result(folder, trials, settings)
    # The command fails when nothing was found (every trial failed, or none ran); a --budget stop is a resumable end
    # the user asked for, said on its own line, not a failure.
    if result.best is None and not result.budget_stop:
        result.failure = _nothing_best(experiment.manifest.name, result.rows, settings)
    return result


def _nothing_best(name: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Why a study has no best trial, and how to go on."""
    if not rows:
        return (f"{name}: no trial ran (--timeout, or a trial budget already spent); lfgen tune {name} --trials N "
                "goes on")
    counts = ", ".join(f"{sum(r['state'] == state for r in rows)} {state}" for state in ("failed", "pruned", "running")
                       if any(r["state"] == state for r in rows))
    first = next((r for r in rows if r["state"] == "failed" and r["why"]), None)
    cause = f"; {first['run']}: {first['why']}" if first else ""
    return (f"{name}: no trial completed with a finite {settings['metric']} ({counts}){cause}; fix the cause, then "
            f"lfgen tune {name} --trials {settings['trials'] + len(rows)} tries more")


def _result(folder: Path, trials: Any, settings: dict[str, Any]) -> TuneResult:
    from lfgen.layout import STATE
    from lfgen.runs.spend import experiment_spend

    rows = studies.trial_rows(trials.study)
    outputs = {run.name: run.output_dir for run in trials.experiment.manifest.runs}
    spends = experiment_spend(folder / STATE, trials.root, list(outputs.items()))
    for row in rows:  # the GPU time each trial used, measured (wall time x GPUs)
        row["gpu_hours"] = spends[row["run"]].gpu_hours if row["run"] in spends else None
    result = TuneResult(folder, rows=rows, budget_stop=trials.budget_stop)
    result.best = best([r for r in rows if r["state"] == "complete"], lambda r: r["value"], settings["metric"])
    if result.best is not None:
        result.best_config = _write_best(folder, trials, settings, result.best)
    return result


def _write_best(folder: Path, trials: Any, settings: dict[str, Any], row: dict[str, Any]) -> Path:
    """best.yaml: the best trial's full config, built as its run was, rooted for the experiment folder. It trains in
    a folder of its own (``outputs/<name>/best``): the trial's output dir holds the trial's finished results, and
    ``lfgen run`` of a config whose output dir holds its results has nothing to do."""
    import os

    from lfgen.builder.render import render_build
    from lfgen.experiments.manifest import plan_runs
    from lfgen.yamlio import write_atomic

    manifest = trials.experiment.manifest
    entry = next(run for run in manifest.runs if run.name == row["run"])
    _, built = plan_runs(manifest.name, manifest.base, trials.options, [RunSpec("best", entry.overrides)],
                         trials.outputs_dir)
    text = render_build(built[0][1], command="preset", folder=folder)
    shown = os.path.relpath(folder / BEST_CONFIG)  # the tuner runs in the experiment's root: as the user types it
    header = (f"# lfgen tune {manifest.name}: the best trial, {row['run']} ({settings['metric']} {row['value']:.6g}); "
              f"train it again with lfgen run {shown}, or start the next stage with lfgen sweep AXIS --base {shown}\n")
    return write_atomic(folder / BEST_CONFIG, header + text)
