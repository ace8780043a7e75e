"""Sweeps: an axis, a grid or a random space expanded into runs (``RunSpec``).

A run is a set of *option* overrides on the experiment's base (``rank=32``, ``set={...}``),
so every run config is built by the same rules as ``lfgen preset`` and ``lfgen explain``
can rebuild it. Axis defaults live in ``presets/sweeps.yaml``.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from lfgen.builder.option_table import GRID_OPTIONS, OPTION_KEYS
from lfgen.errors import InputError, did_you_mean
from lfgen.resources import load_data

SPECIAL_AXES = ("grid", "random", "plan")
MAX_NAME = 200
MAX_RUNS = 10_000  # one experiment folder; more is a mistake or a job for a tuner
STALE_DRAWS = 10_000  # random search gives up after this many draws in a row that found no new point
MAX_WHOLE = 2**53  # the largest whole number a 64-bit float holds exactly: an int range's ends stay within it
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: its name and the option overrides that make it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def axes() -> dict[str, dict[str, Any]]:
    return load_data("sweeps.yaml")["axes"]


def axis_keys() -> dict[str, str]:
    """Each sweep axis and the LlamaFactory key it moves (rank -> lora_rank), through its option or --set."""
    return {axis: OPTION_KEYS[spec["option"]] if "option" in spec else spec["key"] for axis, spec in axes().items()}


def seed_order() -> list[str]:
    return list(load_data("sweeps.yaml")["order"])


def format_value(value: Any, scientific: bool | None = None) -> str:
    """A value as it appears in a run name: short, no commas or slashes (LlamaFactory splits paths on ',');
    a float below 1e-3 (or any, with *scientific*) as ``2e-4``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 if scientific is None else scientific):
            mantissa, exponent = f"{value:e}".split("e")
            return f"{float(mantissa):g}e{int(exponent)}"
        return f"{value:g}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value).replace(",", "+"))


def format_values(values: list[Any]) -> list[str]:
    """The values of one axis as run names show them, in one notation: when one float needs ``2e-4``, every float
    is written so (lr-2e-4, lr-2e-3, not lr-2e-4, lr-0.002)."""
    scientific = any(isinstance(v, float) and not isinstance(v, bool) and v != 0 and abs(v) < 1e-3 for v in values)
    return [format_value(v, scientific if isinstance(v, float) else None) for v in values]


def check_name(name: str, what: str = "--name") -> str:
    if len(name) > MAX_NAME:  # a folder name, with room for lfgen's own prefixes and suffixes (".x.lock")
        raise InputError(f"{what}: {name[:40]}... is {len(name)} characters, too long for a folder name; use at "
                         f"most {MAX_NAME}")
    if not _SAFE_NAME.match(name):
        raise InputError(f"{what}: {name!r} must be letters, digits, '.', '_' or '-' (it becomes a folder name)")
    return name


def _parse(axis: str, kind: str, raw: str) -> Any:
    if kind == "bool":
        if raw.strip().lower() not in ("true", "false"):
            raise InputError(f"{axis}: {raw!r} is not true or false; e.g. lfgen sweep {axis} true false")
        return raw.strip().lower() == "true"
    try:
        if kind == "int":
            return int(raw)
        if kind in ("float", "ratio"):
            value = float(raw.removesuffix("r") or 1) if kind == "ratio" and raw.endswith("r") else float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        article = "an integer" if kind == "int" else "a number"
        raise InputError(f"{axis}: {raw!r} is not {article}; e.g. lfgen sweep {axis} "
                         f"{' '.join(map(str, axes()[axis]['values']))}") from None
    return raw


def check_axis(axis: str) -> dict[str, Any]:
    """The axis' entry of presets/sweeps.yaml; an unknown axis is one InputError with the known ones."""
    table = axes()
    if axis not in table:
        names = list(table) + list(SPECIAL_AXES)
        raise InputError(f"axis: unknown axis {axis!r}{did_you_mean(axis, names)}; choose one of {', '.join(names)}")
    return table[axis]


def axis_runs(axis: str, values: list[str], base_rank: int, defaults: list[Any] | None = None,
              hold: dict[str, Any] | None = None) -> list[RunSpec]:
    """Runs along one named axis; *values* replace the axis defaults when given, else *defaults* (the base's shape
    chose them) replace the table's; *hold* (option -> value) is set in every run (alpha holds the base's lr)."""
    spec = check_axis(axis)
    raws = values or [str(v) for v in (defaults if defaults is not None else spec["values"])]
    parsed = [_parse(axis, spec["type"], raw) for raw in raws]
    shown = format_values(parsed)
    runs = []
    for raw, value, text in zip(raws, parsed, shown):
        if spec["type"] == "ratio":
            # alpha: the defaults and "2r" are multiples of the base rank; a plain number is alpha itself.
            alpha = round(value * base_rank) if (not values or raw.endswith("r")) else int(value)
            runs.append(RunSpec(spec["name"].format(alpha), {"alpha": alpha, **(hold or {})}))
        elif "key" in spec:  # a LlamaFactory key with no lfgen option (pref_beta)
            runs.append(RunSpec(spec["name"].format(text), {"set": {spec["key"]: value}}))
        else:
            runs.append(RunSpec(spec["name"].format(text), {spec["option"]: value}))
    return _unique(runs)


def _grid_values(key: str, raw: str) -> list[Any]:
    from lfgen.yamlio import loads

    items = [item.strip() for item in raw.split(",")]
    if not raw.strip() or not all(items):
        raise InputError(f"grid: {key}= has an empty value; write {key}=v1,v2 (join module names with +)")
    values = []
    for item in items:
        if key == "lora_target":
            values.append(item.replace("+", ","))
            continue
        try:
            values.append(loads(item))
        except Exception:  # noqa: BLE001 - not YAML: keep the text
            values.append(item)
    return values


def grid_runs(assignments: list[str]) -> list[RunSpec]:
    """The Cartesian product of ``key=v1,v2`` assignments over any LlamaFactory keys."""
    from lfgen.catalogs.llamafactory import snapshot

    if not assignments:
        raise InputError("grid: no values; e.g. lfgen sweep grid lora_rank=16,32,64 learning_rate=1e-4,2e-4")
    dims: dict[str, list[Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"grid: {item!r} is not key=v1,v2; e.g. lora_rank=16,32,64")
        key = key.strip()
        snapshot().check_key(key, option="grid")
        if key in dims:
            raise InputError(f"grid: {key}= is given twice; give it once with every value ({key}=v1,v2,...)")
        dims[key] = _grid_values(key, raw)
    size = math.prod(len(values) for values in dims.values())
    if size > MAX_RUNS:
        raise InputError(f"grid: {size:,} runs is more than lfgen lays out at once ({MAX_RUNS:,}); split the grid "
                         "or sample it (lfgen sweep random N --space FILE)")
    shown = {key: dict(zip(map(repr, values), format_values(values))) for key, values in dims.items()}
    runs = []
    for combo in itertools.product(*dims.values()):
        options: dict[str, Any] = {"set": {}}
        for key, value in zip(dims, combo):
            if key in GRID_OPTIONS:
                options[GRID_OPTIONS[key]] = value
            else:
                options["set"][key] = value
        name = "_".join(f"{key}-{shown[key][repr(value)]}" for key, value in zip(dims, combo))
        runs.append(RunSpec(name, {k: v for k, v in options.items() if v != {}}))
    return _unique(runs)


def _unique(runs: list[RunSpec]) -> list[RunSpec]:
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise InputError(f"values: {run.name} appears twice; give each value once")
        seen.add(run.name)
    return runs


# --- random search over a space file ---------------------------------------------------------------


def load_space(path: str) -> dict[str, dict[str, Any]]:
    """A space file: ``key: {low, high, log?, type?}`` or ``key: {choices: [...]}`` per LlamaFactory key."""
    from lfgen.yamlio import load_config

    return check_space(load_config(path), path)


def check_space(space: dict[str, Any], path: str, extra: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Check a space (see ``load_space``) read from *path*; keys in *extra* need not be LlamaFactory keys."""
    from lfgen.catalogs.llamafactory import snapshot

    if not space:
        raise InputError(f"{path}: the space is empty; give at least one key, e.g. learning_rate: "
                         "{low: 1.0e-4, high: 5.0e-4, log: true}")
    for key, spec in space.items():
        if key not in extra:
            snapshot().check_key(key, option=f"{path}")
        where = f"{path}: {key}"
        if not isinstance(spec, dict):
            raise InputError(f"{where}: must be {{low, high}} or {{choices: [...]}} (got {spec!r})")
        if "choices" in spec:
            if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
                raise InputError(f"{where}: choices must be a non-empty list and alone (got {spec!r})")
            continue
        unknown = set(spec) - {"low", "high", "log", "type"}
        if unknown or not {"low", "high"} <= set(spec):
            raise InputError(f"{where}: a range has low, high and optionally log: true, type: int (got {spec!r})")
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise InputError(f"{where}: low and high must be numbers (got {low!r}, {high!r})")
        # nan passes every comparison below (low > high, low <= 0), so it is named here
        odd = next((v for v in (low, high) if isinstance(v, float) and not math.isfinite(v)), None)
        if odd is not None:
            what = "nan (not a number)" if math.isnan(odd) else odd
            raise InputError(f"{where}: a range end is {what}; low and high must be finite numbers "
                             f"(got {low!r}, {high!r})")
        if low > high:
            raise InputError(f"{where}: low {low} is above high {high}; swap them")
        if spec.get("log") and low <= 0:
            raise InputError(f"{where}: a log range needs low > 0 (got {low})")
        if spec.get("type", "float") not in ("int", "float"):
            raise InputError(f"{where}: type must be int or float (got {spec['type']!r})")
        if spec.get("type") == "int" and max(abs(low), abs(high)) > MAX_WHOLE:
            raise InputError(f"{where}: an int range end beyond {MAX_WHOLE:,} (2**53; got {low!r}, {high!r}); a whole "
                             "number that large is not kept exactly (Optuna stores each parameter as a 64-bit float) "
                             "and no training setting is one; give the range a run can use")
        if spec.get("type") == "int" and math.ceil(low) > math.floor(high):
            raise InputError(f"{where}: an int range with no whole number between low {low} and high {high}; "
                             f"widen it (e.g. low: {math.floor(low)}, high: {math.ceil(high)})")
    return space


def _sample(rng: random.Random, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return rng.choice(spec["choices"])
    low, high = float(spec["low"]), float(spec["high"])
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)
    if spec.get("type") == "int":
        return int(round(value))
    return float(f"{value:.3g}")  # 3 significant digits: readable names, no false precision


def _space_size(space: dict[str, dict[str, Any]]) -> int | None:
    """How many distinct points a space has, when every key is a choice list or an int range; else None."""
    size = 1
    for spec in space.values():
        if "choices" in spec:
            size *= len({repr(choice) for choice in spec["choices"]})
        elif spec.get("type") == "int":
            size *= int(math.floor(spec["high"]) - math.ceil(spec["low"]) + 1)
        else:
            return None
    return size


def random_runs(count: int, space: dict[str, dict[str, Any]], seed: int) -> list[RunSpec]:
    """*count* samples of the space, the same for the same seed; duplicates are drawn again."""
    if count < 1:
        raise InputError(f"random: the number of runs must be at least 1 (got {count})")
    if count > MAX_RUNS:
        raise InputError(f"random: {count:,} runs is more than lfgen lays out at once ({MAX_RUNS:,}); ask for fewer")
    size = _space_size(space)
    if size is not None and count > size:
        raise InputError(f"random: the space has {size:,} distinct point(s), fewer than {count:,}; ask for at most "
                         f"{size:,} runs or widen the space")
    rng = random.Random(seed)
    runs, seen, stale = [], set(), 0
    while stale < STALE_DRAWS:
        stale += 1
        values = {key: _sample(rng, spec) for key, spec in space.items()}
        frozen = tuple(sorted((k, repr(v)) for k, v in values.items()))
        if frozen in seen:
            continue
        seen.add(frozen)
        stale = 0
        options: dict[str, Any] = {"set": {}}
        for key, value in values.items():
            if key in GRID_OPTIONS:
                options[GRID_OPTIONS[key]] = value
            else:
                options["set"][key] = value
        runs.append(RunSpec(f"trial-{len(runs):03d}", {k: v for k, v in options.items() if v != {}}))
        if len(runs) == count:
            return runs
    raise InputError(f"random: the space has fewer than {count} distinct points (found {len(runs)}); "
                     "ask for fewer runs or widen the space")


def plan(base_args: str, base_summary: str) -> list[str]:
    """Seed 000's tuning path for a base, one command per stage (R-EXP-ORDER)."""
    table = axes()
    lines = [f"Seed 000's order, one parameter at a time (R-EXP-ORDER), from {base_summary}:"]
    previous = None
    for step, axis in enumerate(seed_order(), start=1):
        spec = table[axis]
        shown = ", ".join((f"{v:g}r" if v != 1 else "r") if spec["type"] == "ratio" else str(v)
                          for v in spec["values"])
        where = f"--from experiments/{previous}-sweep" if previous else base_args
        lines.append(f"  {step}. {axis:8} {shown:24} lfgen sweep {axis} {where}".rstrip())
        previous = axis
    lines += [f"  {len(seed_order()) + 1}. combine the best values, then check held-out results, overfitting and time "
              "against gain (lfgen compare)",
              "Seed 002 tunes the learning rate right after rank: lfgen sweep lr --from experiments/rank-sweep"]
    return lines
