"""A config's root: the directory its relative local paths are relative to, and moving them to another.

LlamaFactory resolves ``model_name_or_path: ./m`` and ``dataset_dir: data`` from the directory
``llamafactory-cli`` starts in. Every config lfgen writes to a file records that directory in a
``# lfgen-root: DIR`` comment line (absolute, or relative to the config file's own folder), and an
experiment records it in its manifest (``root``). ``lfgen run`` starts LlamaFactory there, from any
working directory; a base config from another root has its paths rebased (:func:`rebase`) so the new
config works from the new root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lfgen.layout import MANIFEST, ROOT_PREFIX, RUNS_DIR, header_root  # noqa: F401 - header_root: also here

# Keys whose value names an existing local file or folder to read (a hub id such as Qwen/Qwen2-7B
# names nothing local and is left alone). Outputs (output_dir, logging_dir, ...) are not here: a new
# config writes its own.
PATH_KEYS = ("model_name_or_path", "adapter_name_or_path", "ref_model", "ref_model_adapters", "reward_model",
             "reward_model_adapters", "dataset_dir", "media_dir", "tokenized_path", "cache_dir", "deepspeed",
             "resume_from_checkpoint")
LIST_KEYS = frozenset({"adapter_name_or_path", "ref_model_adapters", "reward_model_adapters"})  # comma-separated
OUTPUT_KEYS = ("output_dir", "logging_dir")
_NOT_PATHS = ("ONLINE",)  # dataset_dir: ONLINE loads from the hub
_HUB_KEYS = frozenset({"model_name_or_path", "adapter_name_or_path", "ref_model", "ref_model_adapters",
                       "reward_model", "reward_model_adapters"})  # a hub id or a local folder
DEFAULT_DATASET_DIR = "data"  # LlamaFactory's dataset_dir when a config names datasets without one


def _is_local_relative(value: Any) -> bool:
    return (isinstance(value, str) and bool(value) and value not in _NOT_PATHS and "://" not in value
            and not value.startswith("REMOTE:") and not Path(value).is_absolute())


def _moved(value: str, old_root: Path, new_root: Path) -> str:
    """*value* (relative to *old_root*) relative to *new_root*, when it names something that exists."""
    if not _is_local_relative(value) or not (old_root / value).exists():
        return value
    try:
        moved = os.path.relpath(old_root / value, new_root)
    except ValueError:  # another drive (Windows): only an absolute path reaches it
        return str((old_root / value).resolve())
    # "./" keeps a folder such as demo/tiny-model from reading as a hub id "owner/name".
    return moved if moved.startswith(".") else f"./{moved}"


def rebase(config: dict[str, Any], old_root: str | Path, new_root: str | Path) -> dict[str, Any]:
    """A copy of *config* whose relative local paths (``PATH_KEYS``), written for *old_root*, work from
    *new_root*. Values that name nothing under *old_root* (hub ids, files not made yet) and outputs stay
    as they are. A config that names datasets without ``dataset_dir`` gets LlamaFactory's ``data`` made
    explicit when that folder exists under *old_root*."""
    old_root, new_root = Path(old_root).resolve(), Path(new_root).resolve()
    out = dict(config)
    if old_root == new_root:
        return out
    if "dataset_dir" not in out and (out.get("dataset") or out.get("eval_dataset")) \
            and (old_root / DEFAULT_DATASET_DIR).is_dir():
        out["dataset_dir"] = DEFAULT_DATASET_DIR
    for key in PATH_KEYS:
        value = out.get(key)
        if value is None:
            continue
        moved = [_moved(item, old_root, new_root) if isinstance(item, str) else item for item in _items(out, key)]
        out[key] = moved if isinstance(value, list) else ",".join(moved) if key in LIST_KEYS else moved[0]
    return out


def _items(config: dict[str, Any], key: str) -> list[Any]:
    value = config.get(key)
    if isinstance(value, list):
        return value
    if isinstance(value, str) and key in LIST_KEYS:
        return [item.strip() for item in value.split(",")]
    return [value]


def has_relative_paths(config: dict[str, Any]) -> bool:
    """Whether any path (read or written) in *config* depends on the directory LlamaFactory starts in.
    A model or adapter counts when it is a local folder (``./m``, or one that exists here), not a hub id."""
    if (config.get("dataset") or config.get("eval_dataset")) and "dataset_dir" not in config:
        return True
    for key in (*PATH_KEYS, *OUTPUT_KEYS):
        for item in _items(config, key):
            if _is_local_relative(item) and (key not in _HUB_KEYS or item.startswith(".") or Path(item).exists()):
                return True
    return False


def root_line(config: dict[str, Any], folder: str | Path, root: str | Path | None = None) -> list[str]:
    """The ``lfgen-root:`` header line for a config written into *folder* whose paths are relative to
    *root* (default: the working directory): the root relative to *folder*, so the project can move as a
    whole. No line when the config has no relative path."""
    if not has_relative_paths(config):
        return []
    root = Path(root or Path.cwd()).resolve()
    try:
        text = os.path.relpath(root, Path(folder).resolve())
    except ValueError:
        text = str(root)
    return [f"{ROOT_PREFIX}{text}"]


def config_root(path: str | Path, text: str | None = None) -> Path | None:
    """Where the config file at *path* was made: its ``lfgen-root:`` line, else (a run config of an
    experiment written before the line existed) the manifest's ``root``; None for a config lfgen did not
    write, whose relative paths mean the working directory, as for LlamaFactory."""
    import yaml

    from lfgen.errors import InputError
    from lfgen.yamlio import read_text

    path = Path(path)
    if text is None:
        try:
            text = read_text(path)  # refuses a FIFO, which would block here
        except InputError:
            return None
    found = header_root(text, path.parent)
    if found is not None:
        return found
    manifest = path.parent.parent / MANIFEST
    if path.parent.name == RUNS_DIR and manifest.is_file():
        try:
            root = (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("root")
        except (OSError, yaml.YAMLError, AttributeError):
            return None
        if isinstance(root, str):
            return (manifest.parent / root).resolve()
    return None
