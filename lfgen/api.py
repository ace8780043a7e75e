"""Small compositions of the library that both the CLI and Python users call."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfgen.builder import Build, BuildOptions, build
from lfgen.errors import InputError
from lfgen.recipe import header
from lfgen.render import render
from lfgen.yamlio import write_new

if TYPE_CHECKING:  # the sweep machinery loads only when a sweep is made (startup of `lfgen preset`)
    from lfgen.experiment import Experiment


def render_build(result: Build, command: str = "preset") -> str:
    """The YAML text of a build: recipe header, sections, the rule id after each value."""
    notes = {key: decision.rule for key, decision in result.decisions.items()}
    return render(result.config, header=header(result, command), notes=notes)


def write_preset(result: Build, path: str | Path, *, force: bool = False) -> Path:
    """Write a build to *path*; an existing file is kept unless *force*."""
    return write_new(path, render_build(result), force=force)


# --- sweeps ----------------------------------------------------------------------------------------


def make_sweep(axis: str, values: list[str], *, base: str | None = None, options: BuildOptions | None = None,
               name: str | None = None, force: bool = False, from_: str | None = None, metric: str = "eval_loss",
               seed: int = 0, space: str | None = None, export: str | None = None, prune: bool = True,
               experiments_dir: str = "experiments", outputs_dir: str = "outputs") -> Experiment:
    """Lay out an experiment: expand the axis, grid or random space on the base, write it."""
    from lfgen import sweeps
    from lfgen.experiment import best_run, write

    options = options or BuildOptions()
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
    extra = functools.partial(_wandb_files, name, sweep, experiments_dir, outputs_dir) if export else None
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


def _wandb_files(name: str, sweep: dict[str, Any], experiments_dir: str, outputs_dir: str, base_build: Build,
                 built: list) -> dict[str, str]:
    """A W&B sweep over the same values: `wandb sweep experiments/<name>/wandb-sweep.yaml`.

    LlamaFactory takes ``key=value`` overrides after the YAML (``--key value`` fails there), which is
    what W&B's ``${args_no_hyphens}`` macro produces.
    """
    import yaml

    from lfgen.experiment import varying_keys

    base_config = dict(base_build.config)
    base_config.update(report_to="wandb", output_dir=f"{outputs_dir}/{name}/wandb", overwrite_output_dir=True)
    parameters: dict[str, Any] = {}
    if sweep["axis"] == "random":
        for key, spec in sweep["space"].items():
            if "choices" in spec:
                parameters[key] = {"values": spec["choices"]}
            elif spec.get("type") == "int":
                parameters[key] = {"distribution": "int_uniform", "min": spec["low"], "max": spec["high"]}
            else:
                parameters[key] = {"distribution": "log_uniform_values" if spec.get("log") else "uniform",
                                   "min": spec["low"], "max": spec["high"]}
    else:
        configs = [result.config for _, result in built]
        for key in varying_keys(base_build.config, configs):
            parameters[key] = {"values": list(dict.fromkeys(c.get(key) for c in configs))}
    if "lora_rank" in parameters and "lora_alpha" in parameters:
        # A sweep can't tie two parameters; LlamaFactory's own default lora_alpha is 2 x rank, R-ALPHA's ratio.
        ratios = {r.config["lora_alpha"] / r.config["lora_rank"] for _, r in built}
        if ratios != {2.0}:
            raise InputError("--export wandb: alpha moves with rank at a ratio other than 2, which a W&B sweep "
                             "cannot express; sweep rank on a base with alpha = 2 x rank")
        del parameters["lora_alpha"]
        base_config.pop("lora_alpha", None)
    base_rel = f"{experiments_dir}/{name}/wandb-base.yaml"
    spec = {
        "program": "llamafactory-cli",
        "method": "random" if sweep["axis"] == "random" else "grid",
        "metric": {"name": "eval/loss", "goal": "minimize"},
        "parameters": parameters,
        "command": ["llamafactory-cli", "train", base_rel, "${args_no_hyphens}"],
    }
    header = (f"# W&B sweep of experiment {name} (run from the project root):\n"
              f"#   wandb sweep {experiments_dir}/{name}/wandb-sweep.yaml && wandb agent <sweep id>\n"
              "# One agent at a time: every run trains in the same output_dir (overwrite_output_dir: true).\n")
    return {"wandb-sweep.yaml": header + yaml.safe_dump(spec, sort_keys=False),
            "wandb-base.yaml": render(base_config, header=[f"Base config of the W&B sweep {name}"])}


def sweep_plan(base: str, options: BuildOptions) -> list[str]:
    """The staged tuning path (seed 000) for a base, as commands to run."""
    from lfgen import sweeps
    from lfgen.recipe import command_line

    config = build(base, options).config
    args = command_line("sweep", base, options).removeprefix("lfgen sweep ")
    summary = (f"{base} (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}, dropout "
               f"{config.get('lora_dropout')}, target {config.get('lora_target')})")
    return sweeps.plan(f"--base {args}", summary)


def tensorboard_argv(path: str, *, port: int = 6006, host: str = "127.0.0.1") -> list[str]:
    """``tensorboard --logdir_spec name:dir,...`` over the TensorBoard dirs of every run under *path*."""
    import shutil
    import sys

    from lfgen.errors import INSTALL_HINT
    from lfgen.results import find_runs
    from lfgen.results.discover import run_name

    root = Path(path)
    runs = [d for d in find_runs(root) if (d / "runs").is_dir()] if root.exists() else []
    if not runs:
        raise InputError(f"{path}: no run with TensorBoard logs (<output_dir>/runs/) under it; runs need "
                         "report_to: tensorboard (lfgen's default)")
    binary = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if not Path(binary).exists():
        raise InputError(f"tensorboard is not installed; install it with {INSTALL_HINT}")
    base = root if root.is_dir() else root.parent
    spec = ",".join(f"{run_name(d, base).replace(',', '_').replace(':', '_')}:{(d / 'runs').resolve()}" for d in runs)
    return [binary, "--logdir_spec", spec, "--port", str(port), "--host", host]
