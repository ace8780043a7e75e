"""A run's output dir as the runner sees it: clearing it for a fresh start, the checkpoint to resume,
and whether a finished run's results are still there.

- ``clear``: all or nothing, never through a link: the dir is renamed aside in one step (a symlink in it,
  or the dir itself being one, is moved or unlinked, never followed), a new one made with lfgen's console
  log and marker, and the old one removed.
- ``resume_point``: the newest *whole* ``checkpoint-N`` (trainer_state.json readable, weights complete);
  newer broken ones (half written by a kill during a save) are renamed ``broken-checkpoint-N``, so neither
  LlamaFactory nor the Trainer's checkpoint rotation picks them up.
- ``results_missing``: why a run recorded done no longer has its results (the dir or all_results.json gone).
- ``unfinished``: why a dir does not hold a finished training's results (all_results.json, whole).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from lfgen.layout import CONSOLE_LOG, MARKER, RESULTS_FILE, TRAINER_STATE

KEEP = (CONSOLE_LOG, MARKER)  # what a fresh start keeps: every attempt's console, lfgen's mark
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
BROKEN_PREFIX = "broken-"
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")


def clear(output_dir: Path) -> Path | None:
    """Empty *output_dir* but for lfgen's console log and marker, all or nothing.

    Raises OSError (nothing removed) when the dir cannot be set aside; returns the leftover folder when the
    set-aside copy could not be removed in full (the run dir itself is clear then)."""
    aside = output_dir.with_name(f".{output_dir.name}.lfgen-clearing-{os.getpid()}")
    os.rename(output_dir, aside)  # one step: the dir is whole or gone, never half cleared
    try:
        output_dir.mkdir()
        for name in KEEP:
            if os.path.lexists(aside / name):
                os.rename(aside / name, output_dir / name)
    except OSError:
        if output_dir.is_dir() and not output_dir.is_symlink():
            for name in KEEP:
                if os.path.lexists(output_dir / name):
                    os.rename(output_dir / name, aside / name)
            output_dir.rmdir()
        os.rename(aside, output_dir)
        raise
    if aside.is_symlink():  # the output dir itself was a link: drop the link, leave its target alone
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)  # rmtree unlinks the links inside, never follows them
    return aside if os.path.lexists(aside) else None


def checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of a run, oldest first."""
    found = []
    for entry in output_dir.iterdir() if output_dir.is_dir() else ():
        match = _CHECKPOINT.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def _safetensors_whole(path: Path) -> bool:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8:
                return False
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError):
        return False
    ends = [item["data_offsets"][1] for key, item in header.items() if key != "__metadata__"]
    return 8 + length + max(ends, default=0) == size


def broken(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (None: it is whole)."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, ValueError):
        return f"{TRAINER_STATE} is cut short or not JSON"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{TRAINER_STATE} has no global_step"
    weights = [checkpoint / name for name in _WEIGHTS if (checkpoint / name).is_file()]
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return "model.safetensors.index.json is cut short or not JSON"
        weights += [checkpoint / shard for shard in shards]
    if not weights:
        return "no weights (adapter_model.safetensors or model.safetensors)"
    for path in weights:
        if not path.is_file():
            return f"{path.name} is missing"
        if path.suffix == ".safetensors" and not _safetensors_whole(path):
            return f"{path.name} is cut short"
        if path.suffix == ".bin" and not zipfile.is_zipfile(path):
            return f"{path.name} is cut short"
    optimizer = checkpoint / "optimizer.pt"
    if optimizer.exists() and not zipfile.is_zipfile(optimizer):
        return "optimizer.pt is cut short"
    return None


def resume_point(output_dir: Path) -> tuple[Path | None, list[str]]:
    """(the newest whole checkpoint or None, a note per newer broken one set aside as broken-checkpoint-N)."""
    notes = []
    for checkpoint in reversed(checkpoints(output_dir)):
        why = broken(checkpoint)
        if why is None:
            return checkpoint, notes
        aside = checkpoint.with_name(BROKEN_PREFIX + checkpoint.name)
        if os.path.lexists(aside):
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(checkpoint, aside)
        notes.append(f"{checkpoint.name} is broken ({why}); set aside as {aside.name}")
    return None, notes


def results_missing(output_dir: Path) -> str | None:
    """Why a finished run's results are gone (None: they are there)."""
    if not output_dir.is_dir():
        return f"its output dir {output_dir} is gone"
    if not (output_dir / RESULTS_FILE).is_file():
        return f"its results ({output_dir / RESULTS_FILE}) are gone"
    return None


def unfinished(output_dir: Path) -> str | None:
    """Why *output_dir* does not hold a finished training's results (None: it does). LlamaFactory saves the weights,
    then writes ``all_results.json``, once training has ended; a kill during that write leaves it cut short. A kill
    after it (during the final evaluation, or before lfgen recorded the end) leaves a trained run."""
    try:
        results = json.loads((output_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {RESULTS_FILE}"
    except (OSError, ValueError):
        return f"{RESULTS_FILE} is cut short or not JSON"
    return None if isinstance(results, dict) else f"{RESULTS_FILE} is not a JSON object"
