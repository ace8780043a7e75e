"""Where lfgen's data files live, and the one loader that reads them.

In a source checkout (``pip install -e .``) the data sits in ``presets/`` and
``templates/`` at the repository root; a wheel bundles the same folders under
``lfgen/_bundled/``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = Path(__file__).resolve().parent


def _data_root(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lfgen is installed without its {name}/ folder")


def presets_dir() -> Path:
    return _data_root("presets")


def templates_dir() -> Path:
    return _data_root("templates")


@functools.cache
def load_data(relative: str) -> Any:
    """Parse one shipped data file (YAML or JSON) under ``presets/`` or ``lfgen/data/``."""
    path = _PACKAGE / "data" / relative
    if not path.is_file():
        path = presets_dir() / relative
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    # libyaml's loader when PyYAML has it: the pure-Python one costs ~0.3 s at every start.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def _bytecode_cache() -> Any:
    """Compiled templates under the user cache dir: compiling costs ~10 ms of every start."""
    import os

    import jinja2

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lfgen" / "jinja"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every time
        return None
    return jinja2.FileSystemBytecodeCache(str(root))


@functools.cache
def jinja_environment(*, html: bool) -> Any:
    """The one Jinja environment per kind of output over ``templates/``: StrictUndefined always;
    HTML (the report) autoescaped, YAML (configs) not, since its values pass the YAML-safe filter."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                              autoescape=html, keep_trailing_newline=not html, trim_blocks=html, lstrip_blocks=html,
                              bytecode_cache=_bytecode_cache())
