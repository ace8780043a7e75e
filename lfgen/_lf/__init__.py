"""Scripts that run inside the Python that has LlamaFactory (``python -P SCRIPT``), never in lfgen's.

Each imports only the standard library and LlamaFactory, so lfgen need not be installed there.
"""

from __future__ import annotations

from pathlib import Path


def script(name: str) -> str:
    """The path of one of these scripts (``probe``, ``chat``, ``sample``), for an argv."""
    return str(Path(__file__).with_name(f"{name}.py"))
