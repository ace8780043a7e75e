"""The next step of an experiment (R-EXP-ORDER): seed 000's one-parameter-at-a-time order, after what the
experiment and its family already searched (lfgen.results.family), as a command.

A rank sweep's best leads to an alpha sweep at that rank; an lr sweep made --from a rank sweep leads to alpha, not
back to rank; a tune whose space held every axis of the order leads to combining and validating.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lfgen.experiments.sweeps import axes, axis_keys, seed_order
from lfgen.layout import RUN_CONFIG
from lfgen.runs.reader import RunData


def tuning_order() -> tuple[str, ...]:
    """Seed 000's one-parameter-at-a-time order of sweep axes, from presets/sweeps.yaml (as ``lfgen sweep plan``)."""
    keys = axis_keys()
    return tuple(axis for axis in seed_order() if axis in keys)


def varied(runs: Sequence[RunData]) -> tuple[str, ...]:
    """The sweep axes' keys whose value differs between *runs*."""
    return tuple(key for key in axis_keys().values()
                 if len({repr(run.config.get(key)) for run in runs if run.config}) > 1)


def stage_of(cfg: dict[str, object], changed: tuple[str, ...]) -> str | None:
    """The axis an experiment searched: the first axis of the order whose key varied (a rank sweep moves alpha
    too), else any varied axis."""
    from lfgen.builder.shapes import of_config

    order = of_config(cfg).tuning_axes(tuning_order())
    keys = axis_keys()
    axis_of = {key: axis for axis, key in keys.items()}
    return next((axis for axis in order if keys[axis] in changed), next((axis_of[key] for key in changed), None))


def next_step(best: RunData, changed: tuple[str, ...], folder: Path | None, best_by: str,
              history: Sequence[Sequence[str]] = (), lead: str | None = None) -> str:
    """What to try after *best* (the best run of an experiment that varied *changed*): the first axis of seed 000's
    order that neither this experiment nor its family searched (*history*: the axes each experiment of the family
    searched, oldest first, this one last). Without an ancestor the order is taken as followed up to this
    experiment's axis. *lead*: the text before the arrow (default: "<axis> <value> best")."""
    from lfgen.builder.shapes import of_config

    cfg = best.config
    order = of_config(cfg).tuning_axes(tuning_order())  # a full fine-tune has no rank; a DPO run has beta
    keys = axis_keys()
    stage = stage_of(cfg, changed)
    searched = {axis for axes_of in history for axis in axes_of}
    earlier = {axis for axes_of in history[:-1] for axis in axes_of}  # the ancestors'
    done = searched | ({stage} if stage else set())
    if len(history) < 2 and stage in order:
        done |= set(order[:order.index(stage)])
    if stage is None:
        what = "one configuration only"
    else:
        what = f"{stage} {_num(cfg.get(keys[stage]))} best"
        if stage == "alpha" and cfg.get("lora_rank") is not None:
            what += f" (rank {cfg['lora_rank']})"
    what = lead or what
    following = next((axis for axis in order if axis not in done), None)
    before = [axis for axis in order if axis in earlier - {stage}]
    said = f" ({', '.join(before)} searched before)" if before and following is not None else ""
    if following is None:
        text = (f"{what} → combine the best value of each stage in one config and validate it on held-out data, "
                f"weighing overfitting and time against the gain (start from {shown(best.config_file or best.path)})")
    else:
        text = (f"{what}{said} → sweep {following}{_values(following, cfg)}: "
                f"{_command(following, best, folder, best_by)}")
    # A rank sweep moves alpha, and with it R-LR-RANK's learning rate: by design, not a second parameter.
    extra = [k for k in changed if stage and k != keys[stage]
             and not (stage == "rank" and k in ("lora_alpha", "learning_rate"))]
    if extra:
        text += (f" (note: {', '.join(extra)} changed as well; R-EXP-ORDER tunes one parameter at a time, "
                 "so the comparison mixes their effects)")
    return text


def _values(axis: str, cfg: dict[str, object]) -> str:
    """The values ``lfgen sweep AXIS`` tries by default, as presets/sweeps.yaml lists them."""
    spec = axes().get(axis)
    if spec is None:
        return ""
    rank = cfg.get("lora_rank")
    if spec.get("type") == "ratio":
        if not isinstance(rank, int):
            return ""
        return f" at rank {rank} ({', '.join(str(int(v * rank)) for v in spec['values'])})"
    return f" ({', '.join(_num(v) for v in spec['values'])})"


def _command(axis: str, best: RunData, folder: Path | None, best_by: str) -> str:
    if folder is not None and best.config_file is not None and best.config_file.name == RUN_CONFIG:
        # lfgen sweep --from picks the best finished run in that folder itself, by all_results.json.
        metric = "" if best_by == "final_eval_loss" else " --metric train_loss"
        return f"`lfgen sweep {axis} --from {shown(folder)}{metric}`"
    if best.config_file is not None and best.config_file.suffix == ".yaml":
        return f"`lfgen sweep {axis} --base {shown(best.config_file)}`"
    return f"`lfgen sweep {axis} --base <the best run's config>` (no config file was found next to the run)"


def shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _num(value: object) -> str:
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-")
    return str(value)
