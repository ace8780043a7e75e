"""Commands on one finished run: export (merge), chat, sample."""

from __future__ import annotations

import sys

import click

from lfgen.cli.output import CONTEXT

@click.command(name="export", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--export-dir", type=click.Path(file_okay=False), help="Where to write the merged model "
              "(default: RUN_DIR/merged).")
@click.option("--force", is_flag=True, help="Overwrite a non-empty --export-dir.")
def export_command(run_dir: str, export_dir: str | None, force: bool) -> None:
    """Merge a finished run's LoRA adapter into its base model (llamafactory-cli export).

    Model, adapter, template and finetuning type come from the run's own config.

    \b
    Examples:
      lfgen export outputs/rank-sweep/rank-64
      lfgen export outputs/rank-sweep/rank-64 --export-dir models/rank-64-merged
    """
    from lfgen.training.inference import export

    _, target = export(run_dir, export_dir, force=force)
    click.echo(f"merged model written to {target}", err=True)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
def chat(run_dir: str) -> None:
    """Chat with a finished run's adapter (llamafactory-cli chat); end of input or `exit` quits.

    \b
    Examples:
      lfgen chat outputs/rank-sweep/rank-64
      printf 'hello\\n' | lfgen chat outputs/rank-sweep/rank-64
    """
    from lfgen.training.inference import chat as run_chat

    sys.exit(run_chat(run_dir))


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--prompts", required=True, type=click.Path(dir_okay=False), help="A text file, one prompt a line.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="JSONL to write (default: RUN_DIR/samples.jsonl).")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
def sample(run_dir: str, prompts: str, output: str | None, max_new_tokens: int) -> None:
    """Answer fixed prompts with a finished run's adapter, for the qualitative check of seed 003.

    Greedy decoding, so runs compare like for like; writes {"prompt", "response"} lines.

    \b
    Examples:
      lfgen sample outputs/rank-sweep/rank-64 --prompts prompts.txt
    """
    from lfgen.training.inference import sample as run_sample

    path = run_sample(run_dir, prompts, output, max_new_tokens=max_new_tokens)
    click.echo(f"wrote {path}", err=True)


COMMANDS = (export_command, chat, sample,)
