"""What ``lfgen run`` and ``lfgen status`` are pointed at: an experiment, or a single config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lfgen.errors import InputError
from lfgen.layout import MANIFEST, SINGLE_STATE_DIR, STATE, experiment_lock


@dataclass
class Target:
    """What ``lfgen run`` was pointed at: an experiment, or a single config (an experiment of one run)."""

    name: str
    root: Path  # the directory runs start in; configs' relative paths resolve from here
    state_path: Path
    runs: list[tuple[str, str, str]]  # (name, config path relative to root, output_dir as in the config)
    lock_path: Path | None = None  # the runner's flock; a single config's is beside its state

    def __post_init__(self) -> None:
        if self.lock_path is None:
            self.lock_path = self.state_path.with_suffix(".lock")


def resolve(spec: str, experiments_dir: str = "experiments") -> Target:
    """An experiment folder, an experiment name under *experiments_dir*, or a config file."""
    from lfgen.runs.manifest import load
    from lfgen.yamlio import check_path, load_config

    path = check_path(spec)  # a name the OS would refuse with ENAMETOOLONG at the first look
    check_path(experiments_dir, "--experiments-dir")
    if not (path / MANIFEST).is_file() and (Path(experiments_dir) / spec / MANIFEST).is_file():
        path = Path(experiments_dir) / spec
    if (path / MANIFEST).is_file():
        exp = load(path)
        root = (exp.path / exp.manifest.root).resolve()
        runs = [(r.name, os.path.relpath(exp.path / r.config, root), r.output_dir) for r in exp.manifest.runs]
        return Target(exp.manifest.name, root, exp.path / STATE, runs, experiment_lock(exp.path))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        config = load_config(path)
        if not config.get("output_dir"):
            raise InputError(f"{path}: has no output_dir; lfgen needs one per run (lfgen preset writes it)")
        from lfgen.paths import config_root

        root = config_root(path) or Path.cwd()  # where lfgen made it; a hand-written config: here
        state = path.resolve().parent / SINGLE_STATE_DIR / f"{path.stem}.sqlite"
        return Target(path.stem, root, state, [(path.stem, os.path.relpath(path.resolve(), root),
                                                str(config["output_dir"]))])
    known = sorted(p.parent.name for p in Path(experiments_dir).glob(f"*/{MANIFEST}"))
    listing = ", ".join(known) if known else f"none in {experiments_dir}/ (lfgen sweep writes one)"
    raise InputError(f"{spec}: no such experiment or config file; experiments: {listing}")
