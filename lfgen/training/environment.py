"""What a run trained with: package versions, GPUs and the lfgen command line (``lfgen_env.json``).

The versions are those of the Python that runs ``llamafactory-cli``, read with ``importlib.metadata``
(no torch or transformers import). When that is another interpreter than lfgen's, they are null:
asking it would cost a subprocess per run for a record.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from lfgen.layout import ENV_MANIFEST

PACKAGES = ("llamafactory", "transformers", "peft", "torch")


@functools.cache  # one lookup per process: the installed versions do not change while lfgen runs
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def same_interpreter(python: str | None) -> bool:
    """Whether *python* is this interpreter (a venv's python and the base one it links to are not the same)."""
    return python is not None and Path(python).absolute() == Path(sys.executable).absolute()


def environment(*, python: str | None, gpus: list[str], command: list[str], started: datetime | None = None,
                **extra: Any) -> dict[str, Any]:
    """The manifest: versions (null when LlamaFactory's Python is not this one), GPU names, device, command."""
    from lfgen import __version__

    same = same_interpreter(python)
    manifest: dict[str, Any] = {"lfgen": __version__}
    manifest.update({package: _version(package) if same else None for package in PACKAGES})
    manifest.update({
        "python": platform.python_version() if same else None,
        "llamafactory_python": python,
        "gpus": list(gpus),
        "device": "cuda" if gpus else "cpu",
        "command": list(command),
        "started": (started or datetime.now().astimezone()).isoformat(timespec="seconds"),
    })
    manifest.update(extra)
    return manifest


def write_manifest(output_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``lfgen_env.json`` in *output_dir* atomically (replacing the last attempt's)."""
    from lfgen.yamlio import write_new

    return write_new(output_dir / ENV_MANIFEST, json.dumps(manifest, indent=2) + "\n", force=True)
