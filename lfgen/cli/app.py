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
from lfgen.cli.output import CONTEXT

# Each command, the module of its family (lfgen/cli/<family>.py) and its one-line help: a command's module is
# imported only when it runs, so `lfgen --help` and `lfgen preset` load no other command's code. A test
# keeps the lines here equal to the commands' own help.
_COMMANDS = {
    "calibrate": ("config", 'Compare the memory and time estimates with what LlamaFactory measured, and store corrections.'),
    "chat": ("inference", "Chat with a finished run's adapter (llamafactory-cli chat); end of input or `exit` quits."),
    "compare": ("results", 'Compare every LlamaFactory run found under PATH: one table, with a diagnosis of each run.'),
    "data": ("data", 'Check and measure datasets registered in DIR/dataset_info.json; exit 1 on format problems.'),
    "demo": ("demo", 'The whole loop on a tiny model, on the CPU, offline: sweep, run, compare, report.'),
    "eval": ("evaluation", "Generate on each run's held-out rows (llamafactory-cli train with do_predict) and score them."),
    "explain": ("config", 'Show every value of a config, the rule that chose it and why, and the warnings.'),
    "export": ("inference", "Merge a finished run's LoRA adapter into its base model (llamafactory-cli export)."),
    "preset": ("config", 'Write a LlamaFactory train YAML from preset NAME, sized for your GPU, model and data.'),
    "presets": ("config", 'List the presets: rank, alpha, dropout, target, the shapes each serves, what it is for, and its source.'),
    "report": ("results", 'Write one self-contained HTML report: table, curves, diagnoses, best run and next step.'),
    "run": ("experiments", 'Train every run of an experiment (or one config) with llamafactory-cli, resuming where it stopped.'),
    "sample": ("inference", "Answer fixed prompts with a finished run's adapter, for the qualitative check of seed 003."),
    "status": ("experiments", 'Show every run of an experiment: state, step/total, loss, eval loss, retries, GPU-hours, ETA.'),
    "sweep": ("experiments", 'Lay out an experiment: one LlamaFactory YAML per run along AXIS.'),
    "tensorboard": ("results", 'Start TensorBoard over every run found under PATH, each under its run name.'),
    "tune": ("tuning", 'Search for the best LoRA configuration: trials proposed by Optuna, bad ones stopped early.'),
    "validate": ("config", 'Check config files and report every problem of every file at once; exit 1 if any.'),
}


class _Group(click.Group):
    """Turns lfgen's own errors into one clean line; anything else is a bug and keeps its traceback.
    Commands load lazily (``_COMMANDS``), so `lfgen preset` does not import the code of `lfgen tune`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        import importlib

        family = _COMMANDS.get(name, (None,))[0]
        if family is None:
            return None
        module = importlib.import_module(f"lfgen.cli.{family}")
        return next(command for command in module.COMMANDS if command.name == name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of --help from the table, as click writes it, without importing them."""
        limit = formatter.width - 6 - max(map(len, _COMMANDS))
        rows = [(name, click.Command(name, help=line).get_short_help_str(limit))  # click's own shortening
                for name, (_, line) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
        except BrokenPipeError:
            # The reader stopped reading (`lfgen explain FILE | head`): it has what it asked for. Exit 0 quietly,
            # as a short output that fit the pipe does; Python's flush at exit must not fail on the closed pipe.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt as stop:  # SIGTERM where a command did not say more (connecting to Ray)
            from lfgen.training.signals import Terminated

            if not isinstance(stop, Terminated):
                raise
            click.echo(f"terminated (SIGTERM){f' {stop}' if str(stop) else ''}", err=True)
            sys.exit(stop.exit_code)


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



def main() -> None:
    import os

    # pydantic scans every installed package's entry points for plugins at first use (~20 ms
    # of each start); lfgen uses none. Only this process is affected, not an importing program.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    cli(prog_name="lfgen")
