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
        base_rank = build(base, options).config.get("lora_rank", 8)
        runs = sweeps.axis_runs(axis, values, base_rank)
        sweep["values"] = [next(iter(run.options.values())) for run in runs]
    if name is None:
        name = f"{axis}-sweep" if axis != "grid" else "grid-" + "-".join(v.partition("=")[0] for v in values)
    if export not in (None, "wandb"):
        raise InputError(f"--export: {export!r} is not supported; use --export wandb")
    from lfgen.experiments.wandb import wandb_files

    extra = functools.partial(wandb_files, name, sweep, experiments_dir, outputs_dir) if export else None
    return write(name, base, options, runs, sweep, experiments_dir=experiments_dir, outputs_dir=outputs_dir,
                 force=force, base_from=base_from, prune=prune, extra_files=extra)


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

    config = build(base, options).config
    args = command_line("sweep", base, options).removeprefix("lfgen sweep ")
    summary = (f"{base} (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}, dropout "
               f"{config.get('lora_dropout')}, target {config.get('lora_target')})")
    return sweeps.plan(f"--base {args}", summary)
