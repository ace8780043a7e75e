"""Making experiments on disk: ``experiments/<name>/experiment.yaml`` and one LlamaFactory YAML per run, built.

The manifest (its schema, reading and writing it: lfgen.runs.manifest) records the base and where it came from,
the axis or space, the seed, and every run with its overrides, config path, output dir and estimate. Everything is
built in memory first and written to a temporary folder that replaces the old one in one rename, so an error
leaves nothing half-written and an existing experiment is never touched without ``force``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfgen.builder.context import Build
from lfgen.builder.options import BuildOptions
from lfgen.builder.steps import build
from lfgen.errors import InputError
from lfgen.experiments.sweeps import RunSpec, check_name
from lfgen.layout import MANIFEST, RUNS_DIR, experiment_lock
from lfgen.runs.manifest import Experiment, Manifest, RunEntry, dump, save
from lfgen.yamlio import replace_dir


def merge_options(options: BuildOptions, overrides: dict[str, Any], output_dir: str,
                  tokenize_into: str | None = None) -> BuildOptions:
    values = options.model_dump(exclude_defaults=True)
    extra_set = {**values.get("set", {}), **overrides.get("set", {})}
    values.update({k: v for k, v in overrides.items() if k != "set"})
    values["set"] = extra_set
    values["output_dir"] = output_dir
    if tokenize_into is not None:  # runs on large data share their tokenized copy (R-MULTI-KEYS)
        values["tokenize_into"] = tokenize_into
    return BuildOptions.parse(**values)


def plan_runs(name: str, base: str, options: BuildOptions, runs: list[RunSpec], outputs_dir: str = "outputs"
              ) -> tuple[Build, list[tuple[RunSpec, Build]]]:
    """Build the base and every run in memory (any error surfaces before a file is written)."""
    check_name(name)
    base_build = build(base, options)
    built = []
    for run in runs:
        output_dir = f"{outputs_dir}/{name}/{run.name}"
        built.append((run, build(base, merge_options(options, run.options, output_dir, f"{outputs_dir}/{name}"))))
    return base_build, built


def _run_estimate(result: Build) -> dict[str, Any] | None:
    """Trainable parameters, peak memory and fit for a run, when its model's architecture is known."""
    from lfgen.builder import estimates

    model = str(result.config.get("model_name_or_path", ""))
    try:
        spec, _ = estimates.model_spec(model, required=False)
    except InputError:
        return None
    if spec is None:
        return None
    found = result.estimate
    if found is None:
        found = estimates.estimate(model, result.config, None, None, result.options.num_gpus)
    estimate = {"trainable_params": found.trainable_params, "memory_gib": round(found.peak_gib, 2), "fits": found.fits}
    if found.fit_gib < found.peak_gib:  # the peak nvidia-smi shows holds releasable cache; the fit is decided without
        estimate["fit_gib"] = round(found.fit_gib, 2)
    return estimate


def write(name: str, base: str, options: BuildOptions, runs: list[RunSpec], sweep: dict[str, Any], *,
          experiments_dir: str = "experiments", outputs_dir: str = "outputs", force: bool = False,
          base_from: dict[str, Any] | None = None, prune: bool = True, allow_empty: bool = False,
          extra_files: Callable[[Build, list[tuple[RunSpec, Build]]], dict[str, str]] | None = None,
          command: str = "lfgen sweep", exists: str | None = None) -> Experiment:
    """Write ``<experiments_dir>/<name>/``: the manifest and ``runs/<run>.yaml`` for every run.

    *extra_files* makes more files (the W&B export) from the same built base and runs. *command* is the one writing
    (named to a second writer the lock refuses) and *exists* what to do when the folder is there already (default:
    lfgen sweep's --force or --name).

    Replacing (*force*) takes the experiment's lock, the one ``lfgen run`` holds: an experiment a runner
    holds is never replaced, and of two sweeps writing one name at once only one succeeds.
    """
    from lfgen.runs.lock import Lock

    target = Path(experiments_dir) / check_name(name)
    _refuse_existing(target, force, exists)
    files, manifest, _ = _contents(target, name, base, options, runs, sweep, outputs_dir, base_from, prune,
                                   extra_files)
    if not manifest.runs and not allow_empty:
        raise InputError(f"no run of {name} fits: {manifest.dropped[0]['reason']}; use --no-prune to write them anyway")
    # The lock lives beside the folder, so the replace below never removes it; taken only once everything
    # is built, so bad input writes nothing.
    with Lock(experiment_lock(target), f"experiment {target}", holder=command):
        _refuse_existing(target, force, exists)  # another sweep may have written it meanwhile
        replace_dir(target, files)
    return Experiment(path=target, manifest=manifest)


def preview(name: str, base: str, options: BuildOptions, runs: list[RunSpec], sweep: dict[str, Any], *,
            experiments_dir: str = "experiments", outputs_dir: str = "outputs", base_from: dict[str, Any] | None = None,
            prune: bool = True) -> tuple[Experiment, list[tuple[str, Build]]]:
    """What ``write`` would write, built in memory and written nowhere (lfgen sweep --dry-run): the experiment and
    each kept run's Build (its config, data and hardware: what the time estimate needs)."""
    target = Path(experiments_dir) / check_name(name)
    _, manifest, kept = _contents(target, name, base, options, runs, sweep, outputs_dir, base_from, prune, None)
    if not manifest.runs:
        raise InputError(f"no run of {name} fits: {manifest.dropped[0]['reason']}; use --no-prune to keep them anyway")
    return Experiment(path=target, manifest=manifest), kept


def _refuse_existing(target: Path, force: bool, exists: str | None = None) -> None:
    if target.exists() and not force:
        raise InputError(exists or f"--name: experiment {target} already exists; pass --force to replace it, or "
                         "--name NEW")


def _contents(target: Path, name: str, base: str, options: BuildOptions, runs: list[RunSpec], sweep: dict[str, Any],
              outputs_dir: str, base_from: dict[str, Any] | None, prune: bool,
              extra_files: Callable[[Build, list[tuple[RunSpec, Build]]], dict[str, str]] | None
              ) -> tuple[dict[str, str], Manifest, list[tuple[str, Build]]]:
    from lfgen import __version__
    from lfgen.builder.render import render_build

    base_build, built = plan_runs(name, base, options, runs, outputs_dir)
    from lfgen.runs.ranking import varying_keys

    varying = varying_keys([result.config for _, result in built], base=base_build.config)
    entries, files, dropped, kept = [], {}, [], []
    for run, result in built:
        estimate = _run_estimate(result)
        if prune and estimate is not None and estimate["fits"] is False:
            # The build already tried every micro-batch down to 1 (effective batch kept); nothing fits.
            why = next((w for w in result.warnings if w.startswith("R-HW-HEADROOM")), "does not fit")
            dropped.append({"name": run.name, "reason": why, "estimate": estimate})
            continue
        rel = f"{RUNS_DIR}/{run.name}.yaml"
        # a DeepSpeed JSON the runs point at lies once in the experiment's folder (R-MULTI-DS)
        files[rel] = render_build(result, folder=target.resolve() / RUNS_DIR, files_at=target.resolve())
        files.update(result.files)
        entries.append(RunEntry(name=run.name, overrides=run.options,
                                varies={k: result.config.get(k) for k in varying},
                                config=rel, output_dir=result.config["output_dir"], estimate=estimate))
        kept.append((run.name, result))
    manifest = Manifest(name=name, lfgen=__version__, created=_dt.datetime.now().isoformat(timespec="seconds"),
                        base=base, base_from=base_from, options=options.model_dump(exclude_defaults=True),
                        sweep=sweep, runs=entries, dropped=dropped,
                        root=os.path.relpath(Path.cwd(), target.resolve()))
    files[MANIFEST] = dump(manifest)
    if extra_files is not None:
        files.update(extra_files(base_build, built))
    return files, manifest, kept


def add_runs(experiment: Experiment, runs: list[RunSpec], outputs_dir: str = "outputs") -> Experiment:
    """Build *runs* on the experiment's base and options and add them (lfgen tune's trials, one at a time):
    each ``runs/<run>.yaml`` is written first, then the manifest, atomically; the folder's other files (the
    run state, the study) stay. Call it from the project root (the base and outputs resolve from there), holding
    the experiment's lock."""
    from lfgen.builder.render import render_build
    from lfgen.yamlio import write_atomic

    manifest = experiment.manifest
    options = BuildOptions.parse(**manifest.options)
    _, built = plan_runs(manifest.name, manifest.base, options, runs, outputs_dir)
    entries = list(manifest.runs)
    for run, result in built:
        rel = f"{RUNS_DIR}/{run.name}.yaml"
        for name, text in result.files.items():  # the experiment's own copy of a DeepSpeed JSON (R-MULTI-DS)
            if not (experiment.path / name).is_file():
                write_atomic(experiment.path / name, text)
        write_atomic(experiment.path / rel, render_build(result, folder=experiment.path.resolve() / RUNS_DIR,
                                                         files_at=experiment.path.resolve()))
        entries = [e for e in entries if e.name != run.name]
        entries.append(RunEntry(name=run.name, overrides=run.options, varies=_varies(run, result.config), config=rel,
                                output_dir=result.config["output_dir"], estimate=_run_estimate(result)))
    return save(experiment.path, manifest.model_copy(update={"runs": entries}))


def _varies(run: RunSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The LlamaFactory keys a run's overrides set (alpha moves with rank), with their built values."""
    from lfgen.builder.option_table import OPTION_KEYS

    keys = [OPTION_KEYS.get(k, k) for k in run.options if k != "set"] + list(run.options.get("set", {}))
    if "rank" in run.options and "lora_alpha" not in keys:
        keys.append("lora_alpha")
    return {key: config.get(key) for key in keys}
