"""What a run trained with: its environment manifest (``lfgen_env.json``) and its model, data and devices.

``lfgen run`` writes the manifest into each run's output dir (lfgen.layout.ENV_MANIFEST)::

    {"lfgen": "0.1.0", "llamafactory": "0.9.5", "transformers": "...", "peft": "...", "torch": "...",
     "python": "3.11.7", "gpus": ["NVIDIA H100 80GB HBM3"], "device": "cuda",
     "command": ["lfgen", "run", ...], "started": "2026-12-01T10:00:00"}

Reading never raises: a bad file, or a value of the wrong type, is a line of the run's notes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfgen.layout import ENV_MANIFEST, RECIPE_PREFIX

if TYPE_CHECKING:
    from lfgen.runs.reader import RunData

VERSIONS = ("lfgen", "llamafactory", "transformers", "peft", "torch", "python")
_TEXT_KEYS = (*VERSIONS, "device", "started")


def read_environment(path: Path, notes: list[str]) -> dict[str, Any]:
    """The manifest at *path* with only well-typed values kept; every problem becomes a note."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"{ENV_MANIFEST}: cannot be read ({exc.strerror}); environment not read")
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        notes.append(f"{ENV_MANIFEST}: not valid JSON (cut off while being written?); environment not read")
        return {}
    if not isinstance(data, dict):
        notes.append(f"{ENV_MANIFEST}: holds no JSON object; environment not read")
        return {}
    env: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TEXT_KEYS:
            ok = isinstance(value, str)
        elif key in ("gpus", "command"):
            ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        else:
            continue  # keys a later lfgen may add
        if ok:
            env[key] = value
        else:
            notes.append(f"{ENV_MANIFEST}: {key} is not {'text' if key in _TEXT_KEYS else 'a list of text'} "
                         f"(got {value!r:.60}); ignored")
    return env


def counted_samples(config_text: str, config: dict[str, Any]) -> int | None:
    """The training samples of a run when known: the rows lfgen counted when it built the config (its
    ``lfgen-recipe:`` line), capped by ``max_samples``; else ``max_samples`` itself."""
    counted = None
    for line in config_text.splitlines():
        if line.startswith("#") and RECIPE_PREFIX in line:
            try:
                recipe = json.loads(line.split(RECIPE_PREFIX, 1)[1])
            except ValueError:
                break
            value = recipe.get("samples") if isinstance(recipe, dict) else None
            counted = value if isinstance(value, int) and not isinstance(value, bool) else None
            break
        if line.strip() and not line.startswith("#"):
            break  # the recipe is one of the leading comment lines
    cap = config.get("max_samples")
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
    if counted is not None and cap is not None:
        return min(counted, cap)
    return counted if counted is not None else cap


def device_text(env: dict[str, Any]) -> str | None:
    """``cuda: 2 x NVIDIA H100 80GB HBM3``, ``cpu``, or None without a manifest."""
    device, gpus = env.get("device"), env.get("gpus") or []
    if not gpus:
        return device
    names = list(dict.fromkeys(gpus))
    shown = ", ".join(f"{gpus.count(name)} x {name}" if gpus.count(name) > 1 else name for name in names)
    return f"{device or 'cuda'}: {shown}"


def setup(runs: Sequence[RunData]) -> list[tuple[str, str]]:
    """(what, value) lines saying what *runs* trained with: model, dataset, samples, devices and versions.
    Values that differ between runs are listed, each once; unknown ones are left out."""
    values: dict[str, list[str]] = {}

    def add(what: str, value: Any) -> None:
        if value is None or value == "" or value == []:
            return
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        values.setdefault(what, [])
        if text not in values[what]:
            values[what].append(text)

    for run in runs:
        add("model", run.config.get("model_name_or_path"))
        add("dataset", run.config.get("dataset"))
        add("samples", f"{run.samples:,}" if run.samples is not None else None)
        add("device", device_text(run.environment))
        for key in VERSIONS:
            add(key, run.environment.get(key))
    return [(what, "; ".join(shown)) for what, shown in values.items()]
