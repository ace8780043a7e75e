"""``lfgen tune NAME --staged``: seed 000's order (R-EXP-ORDER: rank, then alpha at the best rank, then dropout,
then targets; presets/sweeps.yaml ``order``) run unattended, as one experiment family.

Stage k is the tune experiment ``NAME-<k>-<axis>``: a small search over that axis's values (presets/sweeps.yaml;
alpha as r/2r/4r of the stage's base rank) on the previous stage's ``best.yaml``, every other key held. The final
combined run is the tune experiment ``NAME`` of one trial on the last stage's best, with nothing varied: it
trains the combination once more and its ``best.yaml`` is the family's result. Each stage resumes like any
study, so ``lfgen tune NAME --staged`` again goes on where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import BEST_CONFIG, MANIFEST

# The space key each seed-000 axis searches (alpha as a ratio of the stage's rank, so alpha follows rank).
_AXIS_KEYS = {"rank": "lora_rank", "alpha": "alpha_ratio", "dropout": "lora_dropout", "target": "lora_target",
              "lr": "learning_rate", "epochs": "num_train_epochs"}


def stages() -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(axis, one-key space of its seed values) per stage, in seed 000's order."""
    from lfgen.experiments.sweeps import axes, seed_order

    table = axes()
    return [(axis, {_AXIS_KEYS[axis]: {"choices": list(table[axis]["values"])}}) for axis in seed_order()]


def tune_staged(name: str, *, base: str | None, options: Any, space: str | None = None, trials: int | None = None,
                experiments_dir: str = "experiments", dry_run: bool = False, **common: Any) -> list[str]:
    """Run every stage (or, with *dry_run*, list them); the lines say the path taken."""
    from lfgen.runs.manifest import load
    from lfgen.tuning.tuner import tune

    if space is not None:
        raise InputError("--staged searches seed 000's axes one at a time (presets/sweeps.yaml); --space is for "
                         "one search: leave it out, or drop --staged")
    plan = stages()
    folders = [Path(experiments_dir) / f"{name}-{i}-{axis}" for i, (axis, _) in enumerate(plan, start=1)]
    if base is None and not (folders[0] / MANIFEST).is_file():
        raise InputError(f"{name}: no staged tuning yet; start it with lfgen tune {name} --staged --base PRESET|FILE")
    lines = ["Seed 000's order (R-EXP-ORDER), one axis per stage, each from the last's best:"]
    current = base
    for folder, (axis, stage_space) in zip(folders, plan):
        (key, spec), = stage_space.items()
        lines.append(f"  {folder.name}: {key} in {spec['choices']} from {current or 'its recorded base'}")
        if dry_run:
            current = f"{folder}/{BEST_CONFIG}"
            continue
        started = (folder / MANIFEST).is_file()
        result = tune(folder.name, base=None if started else current, options=None if started else options,
                      space_spec=None if started else stage_space, trials=trials or len(spec["choices"]),
                      sampler=None if started else "grid", experiments_dir=experiments_dir, **common)
        if result.best is None:
            raise InputError(f"stage {folder.name}: no trial finished with a value; see lfgen status {folder.name}")
        lines.append(f"    best {result.best['run']}: {result.best['params']} ({result.best['value']:.4g})")
        current = str(result.best_config)
        options = None
    lines.append(f"  {name}: the combined final run on {current}")
    if not dry_run:
        final = Path(experiments_dir) / name
        started = (final / MANIFEST).is_file()
        result = tune(name, base=None if started else current, space_spec=None if started else {},
                      trials=1, sampler=None if started else "random", pruner=None if started else "none",
                      experiments_dir=experiments_dir, **common)
        value = f" ({result.best['value']:.4g})" if result.best else " (no value)"
        lines.append(f"    {name}{value}: {result.best_config or 'not finished'}")
        load(final)  # the family's result is an ordinary tune experiment
    return lines
