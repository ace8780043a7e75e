"""Small compositions of the library that both the CLI and Python users call."""

from __future__ import annotations

from pathlib import Path

from lfgen.builder import Build
from lfgen.recipe import header
from lfgen.render import render
from lfgen.yamlio import write_new


def render_build(result: Build, command: str = "preset") -> str:
    """The YAML text of a build: recipe header, sections, the rule id after each value."""
    notes = {key: decision.rule for key, decision in result.decisions.items()}
    return render(result.config, header=header(result, command), notes=notes)


def write_preset(result: Build, path: str | Path, *, force: bool = False) -> Path:
    """Write a build to *path*; an existing file is kept unless *force*."""
    return write_new(path, render_build(result), force=force)
