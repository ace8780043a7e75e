"""An experiment's family: the experiments its base came from, and the sweep axes each one searched.

``lfgen sweep AXIS --from X`` records where its base came from (the manifest's ``base_from``: the best run's
config); a sweep or tune on ``--base experiments/X/best.yaml`` or on another experiment's run config names it as
its ``base``; ``lfgen tune --staged`` chains its stages that way. Walking those links from an experiment gives its
history, oldest first, so the next step of seed 000's order skips what an ancestor already searched (an lr sweep
made --from a rank sweep does not send the user back to rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.layout import MANIFEST, RUN_CONFIG, RUNS_DIR

MAX_DEPTH = 32  # links followed at most (a hand-made loop of bases ends here)
_SPACE_AXES = {"alpha_ratio": "alpha"}  # lfgen tune's space keys that are not LlamaFactory keys


@dataclass(frozen=True)
class Stage:
    """One experiment of the family and the axes it searched."""

    experiment: str
    folder: Path
    axes: tuple[str, ...]


def axes_of(sweep: dict[str, Any]) -> tuple[str, ...]:
    """The sweep axes an experiment searched: its axis, or the axes of the keys its grid, random space or tune
    space varied (lora_rank -> rank, alpha_ratio -> alpha)."""
    from lfgen.experiments.sweeps import axes, axis_keys

    axis = sweep.get("axis")
    if axis in axes():
        return (str(axis),)
    by_key = {key: name for name, key in axis_keys().items()} | _SPACE_AXES
    if axis == "grid":
        keys = [str(item).split("=", 1)[0] for item in sweep.get("grid") or []]
    else:
        space = sweep.get("space")
        keys = list(space) if isinstance(space, dict) else []
    return tuple(dict.fromkeys(by_key[key] for key in keys if key in by_key))


def experiment_of(config: Path) -> Path | None:
    """The experiment folder a config file belongs to: ``<folder>/runs/<run>.yaml`` or ``<folder>/best.yaml``; a
    run's ``lfgen_run.yaml`` in ``outputs/<experiment>/<run>/`` leads to ``experiments/<experiment>`` of its root."""
    from lfgen.paths import config_root

    config = Path(config)
    if config.name == RUN_CONFIG:
        root = config_root(config)
        candidate = (root / "experiments" / config.parent.parent.name) if root is not None else None
        return candidate if candidate is not None and (candidate / MANIFEST).is_file() else None
    for folder in (config.parent.parent if config.parent.name == RUNS_DIR else None, config.parent):
        if folder is not None and (folder / MANIFEST).is_file():
            return folder
    return None


def _parent(folder: Path, manifest: Any) -> Path | None:
    root = (folder / manifest.root).resolve()
    made_from = (manifest.base_from or {}).get("config") or manifest.base
    if not isinstance(made_from, str) or not made_from.endswith((".yaml", ".yml")):
        return None  # a preset name: the family starts here
    path = Path(made_from)
    return experiment_of(path if path.is_absolute() else root / path)


def history(folder: str | Path) -> list[Stage]:
    """The experiments from the oldest ancestor to *folder*, each with the axes it searched; a manifest that
    cannot be read ends the walk (the history is what could be read)."""
    from lfgen.errors import LfgenError
    from lfgen.runs.manifest import load

    chain: list[Stage] = []
    seen: set[Path] = set()
    current: Path | None = Path(folder).resolve()
    while current is not None and current not in seen and len(chain) < MAX_DEPTH:
        seen.add(current)
        try:
            manifest = load(current).manifest
        except LfgenError:
            break
        chain.append(Stage(manifest.name, current, axes_of(manifest.sweep)))
        current = _parent(current, manifest)
    return chain[::-1]
