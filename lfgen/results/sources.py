"""Where a comparison's runs come from: the run directories found under a path, or an experiment's runs.

``lfgen compare outputs/<name>`` finds runs by their files. ``lfgen compare experiments/<name>`` reads the
experiment (``experiment.yaml``): its runs' output dirs, in the order of the manifest, with the state
``lfgen run`` recorded (``state.sqlite``, read only) instead of the one guessed from the files; a run that
has written nothing yet is a ``pending`` row with the config the experiment planned for it, and a run
recorded done whose output dir or results were deleted is ``missing``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import MANIFEST, STATE
from lfgen.runs.discover import RUN_MARKERS, experiment_name, find_runs, run_name


@dataclass(slots=True)
class Source:
    """The runs to compare: their dirs, names and experiments; for an experiment's runs also the planned
    config, the recorded state (None: not recorded) and whether the dir exists yet."""

    dirs: list[Path]
    names: list[str]
    experiments: list[str]
    planned: list[Path | None] = field(default_factory=list)
    states: list[str | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the whole source (an unreadable state file)
    spends: list[Any] = field(default_factory=list)  # an experiment's runs: lfgen.runs.spend.Spend from its event log

    def started(self, index: int) -> bool:
        return not self.planned or self.dirs[index].is_dir()


def is_experiment(path: Path) -> bool:
    """True for an experiment folder (it holds experiment.yaml) or the manifest itself."""
    return (path.is_dir() and (path / MANIFEST).is_file()) or (path.name == MANIFEST and path.is_file())


def find(path: str | os.PathLike[str]) -> Source:
    """The runs of the experiment at *path*, or every run directory at or under it."""
    root = Path(path)
    if is_experiment(root):
        return experiment_runs(root)
    dirs = find_runs(root)
    if not dirs and root.is_dir() and any(root.glob(f"*/{MANIFEST}")):
        return experiments_under(root)  # the experiments folder, as lfgen status takes it
    if not dirs:
        raise InputError(f"{root}: no run directories found (none holds {', '.join(RUN_MARKERS)}); give a run's "
                         "output_dir, a folder above it or an experiment folder (experiments/<name>)")
    base = root.parent if root.is_file() else root
    return Source(dirs, [run_name(d, base) for d in dirs], [experiment_name(d) for d in dirs])


def experiment_runs(path: str | os.PathLike[str]) -> Source:
    """The runs of an experiment folder: output dirs resolved as ``lfgen run`` resolves them (from the
    manifest's root), named as ``lfgen compare`` of their outputs folder names them."""
    from lfgen.runs.manifest import load
    from lfgen.training.rundir import results_missing
    from lfgen.runs.store import current_state, read_rows

    experiment = load(path)
    manifest = experiment.manifest
    if not manifest.runs:
        raise InputError(f"{experiment.path}: the experiment has no runs")
    root = (experiment.path / manifest.root).resolve()
    dirs = [_shown(root / run.output_dir, relative=not experiment.path.is_absolute()) for run in manifest.runs]
    base = Path(os.path.commonpath([str(d) for d in dirs])) if len(dirs) > 1 else dirs[0]
    notes: list[str] = []
    try:
        rows = read_rows(experiment.path / STATE)
    except InputError as exc:
        rows = None
        notes.append(f"{exc}; states are read from the runs' files")
    # Not recorded (trained without lfgen run, or no state at all): the files say, when there are any.
    states = [None if rows is None or (run.name not in rows and d.is_dir()) else current_state(rows.get(run.name))
              for run, d in zip(manifest.runs, dirs)]
    # Done, but its output dir or results were deleted: lfgen run --retry-missing retrains it.
    states = ["missing" if state == "done" and results_missing(d) else state for state, d in zip(states, dirs)]
    from lfgen.runs.spend import experiment_spend

    spent = experiment_spend(experiment.path / STATE, root, [(run.name, run.output_dir) for run in manifest.runs])
    return Source(dirs, [run_name(d, base) for d in dirs], [manifest.name] * len(dirs),
                  [experiment.path / run.config for run in manifest.runs], states, notes,
                  [spent[run.name] for run in manifest.runs])


def experiments_under(folder: Path) -> Source:
    """Every experiment in an experiments folder (``lfgen report experiments``), one after another; each run named
    ``<experiment>/<run>`` (two experiments may both have a rank-8). An experiment that cannot be read is a note."""
    from lfgen.errors import LfgenError
    from lfgen.runs.discover import natural_key

    merged = Source([], [], [], [], [], [])
    for path in sorted((p.parent for p in folder.glob(f"*/{MANIFEST}")), key=natural_key):
        try:
            found = experiment_runs(path)
        except LfgenError as exc:
            merged.notes.append(f"{path.name} skipped: {str(exc).splitlines()[0]}")
            continue
        merged.dirs += found.dirs
        merged.names += [f"{experiment}/{name}" for experiment, name in zip(found.experiments, found.names)]
        merged.experiments += found.experiments
        merged.planned += found.planned
        merged.states += found.states
        merged.spends += found.spends
        merged.notes += found.notes
    if not merged.dirs:
        raise InputError(f"{folder}: no experiment there could be read ({'; '.join(merged.notes)})")
    return merged


def _shown(path: Path, *, relative: bool) -> Path:
    """*path* relative to the working directory when the experiment was given that way and it lies below."""
    if relative:
        try:
            return path.relative_to(Path.cwd().resolve())
        except ValueError:
            pass
    return path
