"""Finding LlamaFactory run directories under a path, at any depth."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lfgen.errors import InputError
from lfgen.layout import EVAL_DIR, RUN_MARKERS

# A directory holding any of these is a run: LlamaFactory writes the first three into output_dir,
# lfgen writes the last before training starts (so a queued run shows up as "empty").
# Checkpoints repeat trainer_state.json; hidden folders (.git, .cache) hold no runs.
_SKIP_PREFIXES = ("checkpoint-", ".")
# Inside a run, runs/ is LlamaFactory's TensorBoard folder (elsewhere it may group lfgen's runs).
_TENSORBOARD_DIR = "runs"
_DIGITS = re.compile(r"(\d+)")


def find_runs(path: str | os.PathLike[str]) -> list[Path]:
    """Every run directory at or under *path*, sorted; skips checkpoint-*/ and runs/ folders."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; give a run's output_dir or a folder above it")
    if root.is_file():
        if root.name in RUN_MARKERS:
            return [root.parent]
        raise InputError(f"{root}: is a file; give a run's output_dir (the folder with trainer_log.jsonl) "
                         "or a folder above it")
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable folders are not runs; reading never stops for one
        is_run = any(entry.name in RUN_MARKERS and entry.is_file() for entry in entries)
        if is_run:
            found.append(folder)
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or entry.name.startswith(_SKIP_PREFIXES):
                continue
            if not (is_run and entry.name in (_TENSORBOARD_DIR, EVAL_DIR)):  # a run's TensorBoard and lfgen eval folders
                stack.append(Path(entry.path))
    return sorted(found, key=natural_key)


def natural_key(path: Path | str) -> list[tuple[int, int | str]]:
    """Sort key that puts r16 before r128: digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(str(path)) if part]


def run_name(run_dir: Path, root: Path) -> str:
    """The run's name in a comparison: its path relative to *root* (its own name when it is *root*)."""
    try:
        relative = run_dir.relative_to(root)
    except ValueError:
        return run_dir.name
    return relative.as_posix() if relative.parts else (run_dir.resolve().name or str(run_dir))


def experiment_name(run_dir: Path) -> str:
    """The experiment a run belongs to: its parent folder (``outputs/<experiment>/<run>``, lfgen's layout),
    or the one above a grouping ``runs/`` folder (``experiments/<experiment>/runs/<run>``)."""
    parent = run_dir.resolve().parent
    if parent.name == "runs" and parent.parent.name:
        return parent.parent.name
    return parent.name or "-"


def tensorboard_dirs(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(run name, its TensorBoard dir ``<output_dir>/runs``) for every run under *path* that has one."""
    root = Path(path)
    runs = [d for d in find_runs(root) if (d / "runs").is_dir()] if root.exists() else []
    if not runs:
        raise InputError(f"{path}: no run with TensorBoard logs (<output_dir>/runs/) under it; runs need "
                         "report_to: tensorboard (lfgen's default)")
    base = root if root.is_dir() else root.parent
    return [(run_name(d, base), d / "runs") for d in runs]
