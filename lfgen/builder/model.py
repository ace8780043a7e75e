"""The model a build is for: its architecture and module inventory, looked up once per process.

A model is a local folder with config.json or an id of the offline catalog (presets/models.yaml);
nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from lfgen.errors import InputError


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the Hugging Face Hub spells a model id


def looks_local(model: str) -> bool:
    """Whether *model* names a folder on disk rather than a Hub id: ``./m``, ``../m``, ``/m``, ``~/m``,
    or a path with more than one separator (``models/qwen/7b``). ``org/name`` and ``gpt2`` are Hub ids."""
    model = str(model)
    if model.startswith(("./", "../", "/", "~", ".\\", "..\\")) or model in (".", ".."):
        return True
    return (os.sep in model or "/" in model) and not _HUB_ID.match(model)


def local_path(model: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where a local *model* is, relative paths resolved from *root* (the current directory by default),
    as LlamaFactory resolves them from the directory it runs in."""
    path = Path(str(model)).expanduser()
    return path if path.is_absolute() or root is None else Path(root) / path


@functools.lru_cache(maxsize=32)
def spec_of(model: str):
    from lfgen.models import load_model

    return load_model(model)


@functools.lru_cache(maxsize=32)
def inventory_of(model: str):
    from lfgen.models import inventory

    return inventory(spec_of(model))


def _exists(model: str) -> bool:
    """Whether *model* names something on disk; a path that cannot even be looked up (too long) counts:
    the user pointed at it."""
    try:
        return Path(model).expanduser().exists()
    except OSError:
        return True


def model_spec(model: str, *, required: bool) -> tuple[Any | None, str | None]:
    """(spec, None), or (None, why) when an id is neither on disk nor in the catalog and not *required*.

    A local folder that is broken (no config.json, bad JSON, unsupported architecture) is always an error:
    the user pointed at it. No model at all is (None, why), never the current folder.
    """
    if not model.strip():
        return None, "model_name_or_path is not set (LlamaFactory needs it)"
    try:
        return spec_of(model), None
    except InputError as exc:
        if required or _exists(model):
            raise
        return None, str(exc)
