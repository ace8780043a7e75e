"""Runs that share a ``tokenized_path`` never write it at once (R-MULTI-KEYS).

LlamaFactory 0.9.5 loads ``tokenized_path`` when the folder is there and not empty (data/loader.py:287-296,
extras/misc.py ``has_tokenized_data``); otherwise it tokenizes, ``save_to_disk()``s the set there (loader.py:330-334)
and trains on, in the same process. Two runs started on one unwritten path would both tokenize and write into the
same folder, and a run started while the first is still saving would load a half-written folder. So the runner
starts one run per unwritten path (its *writer*); the others wait, their slot taking other work, until the folder is
whole (``written``) or the writer has ended. A writer that ended without writing it hands the path to the next run,
after a half-written save it left is removed (LlamaFactory would load it as it is). While a run waits, the runner
asks its source (lfgen tune's Optuna) for no new run: the next trial would share the path and wait too, and asking
for trials before any has a result would turn Optuna's one-at-a-time sampling into a batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Container
from pathlib import Path

from lfgen.errors import LfgenError
from lfgen.runs.store import Store

# What datasets' save_to_disk writes: dataset_dict.json, then per split data-NNNNN-of-NNNNN.arrow, state.json and
# dataset_info.json (the last one written).
_SAVED = re.compile(r"dataset_dict\.json|state\.json|dataset_info\.json|data-\d+-of-\d+\.arrow")


def _whole(folder: Path) -> bool:
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def written(path: Path) -> bool:
    """Whether *path* holds a whole saved dataset: a DatasetDict (what LlamaFactory saves) whose dataset_dict.json
    names splits that are each whole, or a single Dataset (state.json and dataset_info.json, written after the
    shards)."""
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return _whole(path)
    return isinstance(splits, list) and bool(splits) and all(
        isinstance(split, str) and _whole(path / split) for split in splits)


def half_written(path: Path) -> bool:
    """Whether *path* is a save cut short: not empty, not whole, and nothing in it but datasets' own files (a folder
    holding anything else is not lfgen's to remove)."""
    if not path.is_dir() or path.is_symlink() or written(path):
        return False
    entries = list(path.iterdir())
    for entry in entries:
        if entry.is_symlink():
            return False
        if entry.is_dir():
            if any(inner.is_dir() or not _SAVED.fullmatch(inner.name) for inner in entry.iterdir()):
                return False
        elif not _SAVED.fullmatch(entry.name):
            return False
    return bool(entries)


class Shared:
    """Which run writes each unwritten tokenized_path, and the runs waiting for it."""

    def __init__(self, root: Path):
        self.root = root  # runs start here: a relative tokenized_path is relative to it, as LlamaFactory reads it
        self.writers: dict[Path, str] = {}  # tokenized_path -> the run started to write it
        self.waiting: dict[str, Path] = {}  # run -> the tokenized_path it waits for

    def path(self, config_file: str) -> Path | None:
        """The run's tokenized_path, resolved; None when it has none (or its config cannot be read: starting it
        fails it with the reason)."""
        from lfgen.yamlio import parse_config, read_text

        try:
            value = parse_config(read_text(self.root / config_file, "config file"), config_file).get("tokenized_path")
        except LfgenError:
            return None
        return (self.root / value).resolve() if isinstance(value, str) and value else None

    def _writer(self, path: Path, running: Container[str]) -> str | None:
        """The run now writing *path*: started to write it, still running, and the folder not whole yet."""
        writer = self.writers.get(path)
        if writer is None or writer not in running or written(path):
            self.writers.pop(path, None)
            return None
        return writer

    def hold(self, store: Store, name: str, running: Container[str], say: Callable[[str], None]) -> bool:
        """Whether run *name* must wait (another run is writing its tokenized_path); False lets it start, as the
        path's writer when the folder is not whole yet."""
        row = store.get(name)
        path = self.path(row.config)
        if path is None or written(path):
            return False
        writer = self._writer(path, running)
        if writer is not None and writer != name:
            if self.waiting.get(name) != path:
                store.event(name, "waiting", f"tokenized_path {path} is being written by run {writer}")
                say(f"{name}: waits for run {writer} to write tokenized_path {path}")
            self.waiting[name] = path
            return True
        if half_written(path):  # a writer ended mid-save: LlamaFactory would load the half as the whole
            aside = path.with_name(f".{path.name}.lfgen-clearing-{os.getpid()}")
            try:
                os.rename(path, aside)
                shutil.rmtree(aside, ignore_errors=True)
            except OSError as exc:  # left as it is: LlamaFactory's load of it fails the run with the reason
                say(f"{name}: could not remove the half-written tokenized_path {path} ({exc}); remove it by hand")
            else:
                store.event(name, "tokenized-cleared", f"tokenized_path {path} was half written; removed")
                say(f"{name}: tokenized_path {path} was half written (its writer ended mid-save); removed, it "
                    "tokenizes again")
        self.writers[path] = name
        self.waiting.pop(name, None)
        return False

    def ready(self, running: Container[str]) -> list[str]:
        """The waiting runs that may try again now (in the order they waited): their path is written, or its writer
        has ended (the first of them then writes it)."""
        free = [name for name, path in self.waiting.items() if self._writer(path, running) is None]
        for name in free:
            del self.waiting[name]
        return free
