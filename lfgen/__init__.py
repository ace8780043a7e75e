"""lfgen: the experiment layer for LlamaFactory.

The library is the product; ``lfgen.cli`` is a thin layer over it::

    from lfgen import build, BuildOptions, render_build, explain, validate
    result = build("a800", BuildOptions(rank=32, gpu="RTX 4090"))
    print(render_build(result))

Heavy packages (torch, transformers, llamafactory) are never imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lfgen._lazy import exports

__version__ = "0.1.0"

_EXPORTS = {
    "build": "lfgen.builder", "BuildOptions": "lfgen.builder", "Build": "lfgen.builder", "Decision": "lfgen.builder",
    "render_build": "lfgen.api", "write_preset": "lfgen.api",
    "explain": "lfgen.explainer", "validate": "lfgen.validation",
    "load_presets": "lfgen.presets", "get_preset": "lfgen.presets",
    "LfgenError": "lfgen.errors", "InputError": "lfgen.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.api import render_build, write_preset  # noqa: F401
    from lfgen.builder import Build, BuildOptions, Decision, build  # noqa: F401
    from lfgen.errors import InputError, LfgenError  # noqa: F401
    from lfgen.explainer import explain  # noqa: F401
    from lfgen.presets import get_preset, load_presets  # noqa: F401
    from lfgen.validation import validate  # noqa: F401


__getattr__ = exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS) + ["__version__"]
