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
from lfgen.runs.metrics import lower_is_better, needs_eval
from lfgen.runs.ranking import best
from lfgen.tuning import scoring, strategies
from lfgen.tuning import space as spaces
from lfgen.tuning.trials import eval_warnings

if TYPE_CHECKING:
    from lfgen.training.executor import Executor

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
         experiments_dir: str = "experiments", outputs_dir: str = "outputs", executor: Executor | None = None
         ) -> TuneResult:
    """Start or resume the study of experiment *name* (see the module doc); returns its trials and best.
    *space* is a space file (None: the seeds' default); *space_spec* a space already made (lfgen tune --staged).
    *max_samples* and *max_new_tokens*: how each trial is evaluated when the metric is lfgen eval's. *executor*:
    where trials train and are evaluated (default: this machine, one trial per GPU of *gpus*)."""
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
        from lfgen.builder.steps import build

        options = options or BuildOptions()
        where = space or spaces.DEFAULT
        shape = build(base, options).shape  # a DPO base searches pref_beta and its own band, tuned by its metric
        loaded = dict(space_spec) if space_spec is not None else spaces.load(space, shape)  # space_spec: --staged's
        settings = _settings(loaded, trials, sampler, pruner, metric or shape.objective, seed,
                             {"max_samples": max_samples, "max_new_tokens": max_new_tokens})
        if settings["sampler"] == "grid":
            spaces.grid(settings["space"], where, shape)
        spaces.check_builds(settings["space"], base, options, where)
        if dry_run:
            return TuneResult(folder, lines=_plan_lines(name, base, options, settings, gpus))
        experiment = manifests.write(name, base, options, [], settings, experiments_dir=experiments_dir,
                                     outputs_dir=outputs_dir, allow_empty=True)
    if dry_run:
        return TuneResult(folder, lines=_plan_lines(name, experiment.manifest.base,
                                                    BuildOptions.parse(**experiment.manifest.options), settings, gpus))
    root = (folder / experiment.manifest.root).resolve()
    with manifests_lock(folder), contextlib.chdir(root):
        return _session(folder.resolve(), root, experiment, settings, seconds, gpus=gpus, executor=executor,
                        reporter=reporter, say=say, command=command, outputs_dir=outputs_dir)


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
             command: list[str] | None, outputs_dir: str) -> TuneResult:
    """One lfgen tune process, the experiment's lock held: the runner trains the trials as Optuna gives them, one
    per free slot, each told as it ends (lfgen.tuning.trials); the result read back from the study."""
    from lfgen.errors import RunError
    from lfgen.training.executor import LocalExecutor
    from lfgen.training.runner import Runner
    from lfgen.training.target import resolve
    from lfgen.tuning.trials import Trials

    executor = executor or LocalExecutor()
    trials = Trials(folder, root, experiment, settings, width=len(executor.slots(gpus, 1)), seconds=seconds, say=say,
                    outputs_dir=outputs_dir)
    evaluations = executor.evaluations(experiment.manifest.name, root, scoring.options_of(settings)) \
        if needs_eval(settings["metric"]) else None
    runner = Runner(resolve(str(folder)), reporter, gpus=gpus, command=command, executor=executor,
                    evaluations=evaluations)
    runner.run(source=trials)
    if trials.hopeless:
        raise RunError(trials.hopeless)
    return _result(folder, trials, settings)


def _result(folder: Path, trials: Any, settings: dict[str, Any]) -> TuneResult:
    rows = studies.trial_rows(trials.study)
    result = TuneResult(folder, rows=rows)
    result.best = best([r for r in rows if r["state"] == "complete"], lambda r: r["value"], settings["metric"])
    if result.best is not None:
        result.best_config = _write_best(folder, trials, settings, result.best)
    return result


def _write_best(folder: Path, trials: Any, settings: dict[str, Any], row: dict[str, Any]) -> Path:
    """best.yaml: the best trial's full config, built as its run was, rooted for the experiment folder."""
    from lfgen.builder.render import render_build
    from lfgen.experiments.manifest import plan_runs
    from lfgen.yamlio import write_atomic

    manifest = trials.experiment.manifest
    entry = next(run for run in manifest.runs if run.name == row["run"])
    _, built = plan_runs(manifest.name, manifest.base, trials.options, [RunSpec(entry.name, entry.overrides)],
                         trials.outputs_dir)
    text = render_build(built[0][1], command="preset", folder=folder)
    header = (f"# lfgen tune {manifest.name}: the best trial, {row['run']} ({settings['metric']} {row['value']:.6g}); "
              f"train it with lfgen run, or start the next stage with lfgen sweep AXIS --base "
              f"{folder.name}/{BEST_CONFIG}\n")
    return write_atomic(folder / BEST_CONFIG, header + text)
