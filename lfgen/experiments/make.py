"""Making an experiment: expand an axis, grid or random space on a base and write it (``lfgen sweep``)."""

from __future__ import annotations

import functools
from typing import Any

from lfgen.builder.options import BuildOptions
from lfgen.errors import InputError
from lfgen.runs.manifest import Experiment


def make_sweep(axis: str, values: list[str], *, base: str | None = None, options: BuildOptions | None = None,
               name: str | None = None, force: bool = False, from_: str | None = None, metric: str = "eval_loss",
               seed: int = 0, space: str | None = None, export: str | None = None, prune: bool = True,
               experiments_dir: str = "experiments", outputs_dir: str = "outputs") -> Experiment:
    """Lay out an experiment: expand the axis, grid or random space on the base, write it."""
    from lfgen.builder.steps import build
    from lfgen.experiments import sweeps
    from lfgen.experiments.manifest import write
    from lfgen.experiments.finished import best_run

    from lfgen.yamlio import check_can_write

    options = options or BuildOptions()
    check_can_write(experiments_dir, "--experiments-dir")
    check_can_write(outputs_dir, "--outputs-dir")
    if options.output_dir is not None:
        raise InputError(f"--output-dir: each run gets its own {outputs_dir}/<experiment>/<run>; set the parent "
                         "with --outputs-dir")
    base_from = None
    if from_ is not None:
        if base is not None:
            raise InputError("--from and --base: give one; --from takes the best run there as the base")
        best = best_run(from_, metric)
        base = str(best.config)
        base_from = {"source": str(from_), "run": best.run, "metric": metric, "value": best.value,
                     "config": str(best.config)}
    base = base or "a800"
    sweep: dict[str, Any] = {"axis": axis}
    if axis == "grid":
        runs = sweeps.grid_runs(values)
        sweep["grid"] = values
    elif axis == "random":
        count = _count(values)
        if space is None:
            raise InputError("random: needs --space FILE (ranges and choices per key; see docs/sweeps.md)")
        sweep.update(count=count, space=sweeps.load_space(space), seed=seed)
        runs = sweeps.random_runs(count, sweep["space"], seed)
    else:
        sweeps.check_axis(axis)
        built = build(base, options)
        problem = built.shape.axis_problem(axis)
        if problem:
            raise InputError(problem)
        learning_rate = built.config.get("learning_rate")
        defaults = built.shape.axis_values(axis, learning_rate)
        # R-LR-RANK moves the rate with alpha (lr x alpha stays put): an alpha sweep holds the base's rate instead.
        hold = {"lr": learning_rate} if axis == "alpha" and built.decisions.get("learning_rate") is not None \
            and built.decisions["learning_rate"].rule == "R-LR-RANK" else None
        runs = sweeps.axis_runs(axis, values, built.config.get("lora_rank", 8), defaults, hold)
        sweep["values"] = [_axis_value(run) for run in runs]
    if name is None:
        name = f"{axis}-sweep" if axis != "grid" else "grid-" + "-".join(v.partition("=")[0] for v in values)
    if export not in (None, "wandb"):
        raise InputError(f"--export: {export!r} is not supported; use --export wandb")
    from lfgen.experiments.wandb import wandb_files

    extra = functools.partial(wandb_files, name, sweep, experiments_dir, outputs_dir) if export else None
    return write(name, base, options, runs, sweep, experiments_dir=experiments_dir, outputs_dir=outputs_dir,
                 force=force, base_from=base_from, prune=prune, extra_files=extra)


def _axis_value(run: Any) -> Any:
    """The value a run of an axis sweep takes (its first option, or its one --set key)."""
    value = next(iter(run.options.values()))
    return next(iter(value.values())) if isinstance(value, dict) else value


def _count(values: list[str]) -> int:
    if len(values) != 1:
        raise InputError("random: give the number of runs, e.g. lfgen sweep random 12 --space space.yaml")
    try:
        count = int(values[0])
    except ValueError:
        raise InputError(f"random: the number of runs must be an integer (got {values[0]!r})") from None
    if count < 1:
        raise InputError(f"random: the number of runs must be at least 1 (got {count})")
    return count


def sweep_plan(base: str, options: BuildOptions) -> list[str]:
    """The staged tuning path (seed 000) for a base, as commands to run."""
    from lfgen.builder.recipe import command_line
    from lfgen.builder.steps import build
    from lfgen.experiments import sweeps

    built = build(base, options)
    config, shape = built.config, built.shape
    args = command_line("sweep", base, options).removeprefix("lfgen sweep ")
    beta = ([f"Then pref_beta (R-STAGE-BETA): lfgen sweep beta --from experiments/<best>-sweep "
             f"({', '.join(f'{v:g}' for v in shape.beta()['sweep'])})"] if shape.beta() else [])
    if not shape.reads("lora_rank"):
        return [f"Seed 000's order tunes LoRA's rank, alpha, dropout and target; {shape.label} has no LoRA rank:",
                f"  1. lr       lfgen sweep lr --base {args}", *beta]
    summary = (f"{base} (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}, dropout "
               f"{config.get('lora_dropout')}, target {config.get('lora_target')})")
    return sweeps.plan(f"--base {args}", summary) + beta
