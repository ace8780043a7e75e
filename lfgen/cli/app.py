"""The ``lfgen`` group: every command registered, lfgen's errors turned into one clean line.

``LfgenError`` becomes ``Error: ...`` on stderr and exit 1 here and only here; click's usage errors
exit 2. Command modules import only click at the top, so ``lfgen --help`` never pays for pydantic,
pandas or jinja2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen import __version__
from lfgen.cli import config, data, demo, evaluation, experiments, inference, results, tuning
from lfgen.cli.output import CONTEXT


class _Group(click.Group):
    """Turns lfgen's own errors into one clean line; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from lfgen.errors import LfgenError, ProblemsFound

        try:
            return super().invoke(ctx)
        except ProblemsFound as exc:
            for problem in exc.problems:
                click.echo(f"Error: {problem}", err=True)
            sys.exit(1)
        except LfgenError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="lfgen")
def cli() -> None:
    """lfgen: LoRA presets, sweeps, runs and comparisons for LlamaFactory.

    \b
    Examples:
      lfgen demo                             # the whole loop on a tiny model, on the CPU
      lfgen presets                          # the recommended presets
      lfgen preset a800 --rank 64            # a LlamaFactory train YAML on stdout
      lfgen preset lightweight --gpu 4090 -o configs/qv.yaml
      lfgen explain configs/qv.yaml          # the rule behind every value
      lfgen validate configs/*.yaml          # every problem of every file
      lfgen sweep rank && lfgen run rank-sweep && lfgen compare experiments/rank-sweep

    Shell completion: eval "$(_LFGEN_COMPLETE=bash_source lfgen)" (zsh_source, fish_source).
    """


for _module in (config, data, experiments, tuning, evaluation, inference, results, demo):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    import os

    # pydantic scans every installed package's entry points for plugins at first use (~20 ms
    # of each start); lfgen uses none. Only this process is affected, not an importing program.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    cli(prog_name="lfgen")
