"""Building a LlamaFactory config: options, the rule pipeline, rendering, explain and validate.

``build(base, options)`` runs the steps of ``lfgen.builder.steps`` over a ``Context``; every key gets a
``Decision`` naming its rule. Exports load lazily (``lfgen preset`` pays only for what it uses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lfgen._lazy import exports

_EXPORTS = {
    "build": "lfgen.builder.steps",
    "Build": "lfgen.builder.context", "Decision": "lfgen.builder.context",
    "BuildOptions": "lfgen.builder.options", "parse_set": "lfgen.builder.options",
    "render_build": "lfgen.builder.render", "write_preset": "lfgen.builder.render",
}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.builder.context import Build, Decision  # noqa: F401
    from lfgen.builder.options import BuildOptions, parse_set  # noqa: F401
    from lfgen.builder.render import render_build, write_preset  # noqa: F401
    from lfgen.builder.steps import build  # noqa: F401

__getattr__ = exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
