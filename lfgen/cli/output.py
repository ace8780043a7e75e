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

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError  # rich exits 1 here; the group ends a closed pipe as click.echo's (lfgen.cli.app)

    stream = sys.stderr if stderr else sys.stdout
    return _Console(file=stream, highlight=False, soft_wrap=False, width=width(stream))


def print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)


def gpu_hours(hours: float | None) -> str:
    """GPU-hours for a table cell: three significant digits, ``-`` when unknown."""
    return "-" if hours is None else f"{hours:.3g}"


def cost_lines(plan: Any, what: str) -> list[str]:
    """An experiment's GPU-hours and cost before it runs (lfgen.experiments.costs.PlanCost), as the first lines of
    sweep and tune --dry-run; *what* names the runs ("3 run(s)", "20 trial(s), each estimated as the base")."""
    if not plan.known:
        why = plan.missing[0][1] if plan.missing else "no run"
        return [f"estimate: none for {what}: {why}"]
    cost = (f", ~${plan.usd:,.2f} at {'; '.join(plan.prices)}" if plan.usd is not None else "")
    lines = [f"estimate: {what} on {plan.device}: ~{gpu_hours(plan.gpu_hours)} GPU-hours (range "
             f"{gpu_hours(plan.low_gpu_hours)} to {gpu_hours(plan.high_gpu_hours)}){cost}"]
    lines += [f"  no estimate for {name}: {why}" for name, why in plan.missing]
    lines += [f"  {note}" for note in plan.unpriced]
    notes = dict.fromkeys(note for _, cost in plan.known for note in cost.basis["notes"])
    lines += [f"  note: {note}" for note in notes]
    return lines


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
