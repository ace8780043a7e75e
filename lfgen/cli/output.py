"""How the CLI prints: JSON, rich tables sized to the terminal (or $COLUMNS when piped), warnings, and how a
command that runs things ends on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PIPED_WIDTH = 140  # piped output has no terminal: wide enough to keep keys and rule ids on one line


def emit_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def width(stream: Any) -> int | None:
    """The table width: the terminal's (None lets rich measure it), else $COLUMNS, else PIPED_WIDTH."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, soft_wrap=False, width=width(stream))


def print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)


def show(value: Any) -> str:
    """A config value as the YAML lfgen writes shows it."""
    from lfgen.builder.render import yaml_scalar

    return yaml_scalar(value)


@contextmanager
def stoppable(resumes: str) -> Iterator[None]:
    """The one Ctrl-C path of run, tune and eval: SIGTERM is Ctrl-C inside; the library stops and records what runs
    (lfgen.training.runner, lfgen.training.evaluations), then the command says so in one line, *resumes* saying what
    picks it up, and exits 130 (Ctrl-C) or 143 (SIGTERM)."""
    from lfgen.training.signals import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        click.echo(f"{how}: {resumes}", err=True)
        sys.exit(stop.exit_code if isinstance(stop, Terminated) else 130)
