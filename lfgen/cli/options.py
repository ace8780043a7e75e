"""The build options of preset, explain and sweep, generated from the one option table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from lfgen.builder.option_table import OPTIONS, SET_HELP


def _click_option(option: Any) -> Callable[[Any], Any]:
    kind = click.Choice([str(c) for c in option.choices]) if option.choices else \
        None if option.type is str else option.type
    extra = {"default": option.default, "show_default": True} if option.default is not None else {}
    if option.choices and option.type is not str:  # --quant 4: the choice as its number
        extra["callback"] = lambda _ctx, _param, value: None if value is None else option.type(value)
    return click.option(option.flag, type=kind, help=option.help, **extra)


def build_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that builds a config shares (preset, explain, sweep)."""
    options = [_click_option(option) for option in OPTIONS]
    options.append(click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help=SET_HELP))
    for option in reversed(options):
        func = option(func)
    return func


def to_build_options(kwargs: dict[str, Any]) -> Any:
    """Pop the build options out of a command's *kwargs* into a validated ``BuildOptions``."""
    from lfgen.builder.options import BuildOptions, parse_set

    values = {option.name: kwargs.pop(option.name) for option in OPTIONS}
    for option in OPTIONS:
        if option.many and values[option.name]:
            values[option.name] = [item for item in values[option.name].split(",") if item.strip()] or None
    return BuildOptions.parse(**values, set=parse_set(kwargs.pop("set_")))


def _ray_option(what: str) -> Callable[[Any], Any]:
    return click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
                        metavar="[ADDRESS|auto]", help=f"{what} (auto: RAY_ADDRESS, else a local Ray instance); "
                        "needs lfgen[ray]. docs/cluster.md")


def ray_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--ray [ADDRESS|auto], --cpus-per-run and --storage: the commands that can put their runs on Ray."""
    options = [
        _ray_option("Run each run as a task on a Ray cluster"),
        click.option("--cpus-per-run", type=float, default=1.0, show_default=True,
                     help="--ray: CPUs each run's task asks for."),
        click.option("--storage", type=click.Path(file_okay=False), help="--ray: a directory every node shares "
                     "(NFS, a mounted bucket); runs train in STORAGE/<experiment>/<run> (default: each worker's "
                     "own ~/.cache/lfgen/ray-runs; results are copied home either way)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def ray_eval_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """lfgen eval's --ray [ADDRESS|auto], --cpus-per-run and --gpus-per-run (where the adapters are is recorded)."""
    options = [
        _ray_option("Evaluate each run in a task on a Ray cluster, on the node that holds its adapter"),
        click.option("--cpus-per-run", type=float, default=1.0, show_default=True,
                     help="--ray: CPUs each evaluation's task asks for."),
        click.option("--gpus-per-run", type=int, default=1, show_default=True,
                     help="--ray: GPUs each evaluation's task asks for (0 on a cluster without GPUs)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def executor_for(ray_address: str | None, **options: Any) -> Any:
    """Where --ray puts the runs: this machine without it (lfgen.training.executor.LocalExecutor), else a Ray cluster
    (lfgen.training.ray_executor.RayExecutor, connected now: a bad address is one error line). The caller closes it."""
    if ray_address is None:
        from lfgen.training.executor import LocalExecutor

        return LocalExecutor()
    from lfgen.training.ray_executor import RayExecutor

    return RayExecutor(ray_address, **options)
