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
    "build": "lfgen.builder.steps", "BuildOptions": "lfgen.builder.options", "Build": "lfgen.builder.context",
    "Decision": "lfgen.builder.context", "render_build": "lfgen.builder.render", "write_preset": "lfgen.builder.render",
    "explain": "lfgen.builder.explain", "validate": "lfgen.builder.validate",
    "load_presets": "lfgen.catalogs.presets", "get_preset": "lfgen.catalogs.presets",
    "LfgenError": "lfgen.errors", "InputError": "lfgen.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.builder.context import Build, Decision  # noqa: F401
    from lfgen.builder.options import BuildOptions  # noqa: F401
    from lfgen.builder.render import render_build, write_preset  # noqa: F401
    from lfgen.builder.steps import build  # noqa: F401
    from lfgen.errors import InputError, LfgenError  # noqa: F401
    from lfgen.builder.explain import explain  # noqa: F401
    from lfgen.catalogs.presets import get_preset, load_presets  # noqa: F401
    from lfgen.builder.validate import validate  # noqa: F401


__getattr__ = exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS) + ["__version__"]
