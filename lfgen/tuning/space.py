"""The search space of ``lfgen tune``: the default (presets/tune_space.yaml, from the seeds) or a space file in
the format ``lfgen sweep random --space`` reads, plus ``alpha_ratio`` (lora_alpha = ratio x lora_rank).

Every problem is found before a trial starts: an unknown key (did-you-mean), an empty range or choice list,
low above high, and a value the build rejects (each range end and each choice is built on the base).
"""

from __future__ import annotations

from typing import Any

from lfgen.builder.option_table import GRID_OPTIONS
from lfgen.errors import InputError
from lfgen.resources import load_data

ALPHA_RATIO = "alpha_ratio"  # not a LlamaFactory key: lora_alpha as a multiple of the trial's rank
DEFAULT = "presets/tune_space.yaml"


def _table() -> dict[str, Any]:
    return load_data("tune_space.yaml")


def _entries(shape: Any = None) -> dict[str, dict[str, Any]]:
    """The default space's entries (spec, grid, source) for a base of *shape* (lfgen.builder.shapes.Shape): the
    seeds' LoRA keys where the shape reads them, its own learning-rate band (R-METHOD-LR, R-STAGE-LR) and pref_beta
    (R-STAGE-BETA) for a preference stage."""
    table = _table()["space"]
    if shape is None or shape.is_default:
        return table
    found = {}
    for key, entry in table.items():
        rate = shape.learning_rate() if key == "learning_rate" else None
        if rate is not None and rate.range is not None:
            low, high = rate.range
            found[key] = {"spec": {"low": low, "high": high, "log": True}, "grid": shape.axis_values("lr", None),
                          "source": f"{rate.rule}: {shape.label}'s band"}
        elif shape.reads("lora_alpha" if key == ALPHA_RATIO else key):
            found[key] = entry
    beta = shape.beta()
    if beta is not None:
        low, high = beta["range"]
        found["pref_beta"] = {"spec": {"low": low, "high": high, "log": True}, "grid": list(beta["sweep"]),
                              "source": f"R-STAGE-BETA: {shape.stage.label}'s log-spaced band"}
    return found


def default_space(shape: Any = None) -> dict[str, dict[str, Any]]:
    """The seeds' space: lora_rank 8-128 (log), alpha r/2r/4r, learning_rate log-uniform, dropout 0-0.2, targets;
    for another *shape*, its own keys and bands (``_entries``)."""
    return {key: dict(entry["spec"]) for key, entry in _entries(shape).items()}


def variants() -> list[str]:
    """The LoRA variants a space file may choose between (use_dora, use_rslora, pissa_init, loraplus_lr_ratio)."""
    return list(_table()["variants"])


def load(path: str | None, shape: Any = None) -> dict[str, dict[str, Any]]:
    """The space of *path* (a space file), or the default space of the base's *shape*; checked, not yet built
    (see ``check_builds``)."""
    from lfgen.experiments.sweeps import check_space
    from lfgen.yamlio import load_config

    if path is None:
        return default_space(shape)
    space = check_space(load_config(path), path, extra=(ALPHA_RATIO,))
    for key, spec in space.items():
        where = f"{path}: {key}"
        if "choices" not in spec and spec["low"] == spec["high"]:
            raise InputError(f"{where}: the range is empty (low = high = {spec['low']}); widen it, or fix the value "
                             f"with choices: [{spec['low']}]")
        if key == ALPHA_RATIO:
            values = spec.get("choices", [spec.get("low"), spec.get("high")])
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
                raise InputError(f"{where}: ratios must be numbers above 0 (lora_alpha = ratio x lora_rank; got "
                                 f"{values!r})")
    return space


def grid(space: dict[str, dict[str, Any]], where: str, shape: Any = None) -> dict[str, list[Any]]:
    """The values ``--sampler grid`` walks: each key's choices; a default range's grid values (seed figures, or the
    *shape*'s band)."""
    defaults = _entries(shape)
    found = {}
    for key, spec in space.items():
        if "choices" in spec:
            found[key] = list(spec["choices"])
        elif key in defaults and defaults[key]["spec"] == spec and "grid" in defaults[key]:
            found[key] = list(defaults[key]["grid"])
        else:
            raise InputError(f"{where}: {key}: --sampler grid needs choices, not a range (got {spec!r}); give "
                             "choices: [...] or use --sampler tpe|random")
    return found


def suggest(trial: Any, space: dict[str, dict[str, Any]], grid_values: dict[str, list[Any]] | None = None
            ) -> dict[str, Any]:
    """The trial's parameters, drawn from the space (Optuna's suggest_*; the grid's values for --sampler grid)."""
    params = {}
    for key, spec in space.items():
        if grid_values is not None or "choices" in spec:
            params[key] = trial.suggest_categorical(key, (grid_values or {}).get(key) or spec["choices"])
        elif spec.get("type") == "int":
            params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return params


def to_options(params: dict[str, Any], base_rank: int) -> dict[str, Any]:
    """Build-option overrides for a trial's parameters (a RunSpec's options): lora_rank -> rank, so alpha follows
    it; alpha_ratio -> alpha = ratio x rank; lora_target -> target (resolved per model); other keys via set."""
    options: dict[str, Any] = {"set": {}}
    for key, value in params.items():
        if key == ALPHA_RATIO:
            continue
        if key in GRID_OPTIONS:
            options[GRID_OPTIONS[key]] = value
        else:
            options["set"][key] = value
    if ALPHA_RATIO in params:
        rank = int(options.get("rank", base_rank))
        options["alpha"] = max(1, round(float(params[ALPHA_RATIO]) * rank))
    return {k: v for k, v in options.items() if v != {}}


def corners(space: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One parameter set per range end and per choice (the others left at the base), for ``check_builds``."""
    points = []
    for key, spec in space.items():
        values = spec["choices"] if "choices" in spec else [spec["low"], spec["high"]]
        for value in values:
            if spec.get("type") == "int":
                value = int(value)
            points.append({key: value})
    return points


def check_builds(space: dict[str, dict[str, Any]], base: str, options: Any, where: str) -> int:
    """Build the base at every corner of the space; the first value the build rejects is one InputError.
    Returns the base's lora_rank (alpha_ratio multiplies it when the space has no lora_rank)."""
    from lfgen.builder.steps import build
    from lfgen.errors import LfgenError
    from lfgen.experiments.manifest import merge_options

    base_rank = int(build(base, options).config.get("lora_rank", 8))
    for point in corners(space):
        overrides = to_options(point, base_rank)
        try:
            build(base, merge_options(options, overrides, "outputs/check"))
        except LfgenError as exc:
            (key, value), = point.items()
            raise InputError(f"{where}: {key}: the build rejects {value!r}: {str(exc).splitlines()[0]}") from None
    return base_rank
