"""Data commands: data (rows, format, duplicates, leakage and token lengths of registered datasets)."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.output import CONTEXT, console, emit_json

BAR_FROM = 10_000  # rows from which a terminal gets a progress bar


@click.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--dataset-dir", default="data", show_default=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder with dataset_info.json.")
@click.option("--model", metavar="M", help="A local model folder: its tokenizer counts the tokens "
                                          "(without --model, an approximation, which the output names).")
@click.option("--cutoff-len", type=int, default=2048, show_default=True, metavar="N",
              help="Count the samples this cutoff_len would truncate.")
@click.option("--eval", "eval_names", metavar="NAME[,NAME]",
              help="Evaluation dataset(s): checked too, and their overlap with the training sets counted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: datasets[], train (docs/cli.md).")
def data(names: tuple[str, ...], dataset_dir: str, model: str | None, cutoff_len: int, eval_names: str | None,
         as_json: bool) -> None:
    """Check and measure datasets registered in DIR/dataset_info.json; exit 1 on format problems.

    For each: rows, a format check against its registration (alpaca or sharegpt: missing
    columns, wrong roles, empty prompts or answers), exact duplicates, overlap of the eval
    sets with the training sets, the token lengths (p50/p90/p99/max) and how many samples
    --cutoff-len would truncate, with the cutoff_len R-DATA-CUTOFF would write.

    \b
    Examples:
      lfgen data alpaca_en_demo --dataset-dir data
      lfgen data my_sft --eval my_eval --model models/qwen2-7b --cutoff-len 1024
      lfgen data my_sft --json | jq .train.lengths
    """
    from lfgen.builder.data_report import report, rows_of

    evals = [n.strip() for n in (eval_names or "").split(",") if n.strip()]
    kwargs: dict[str, Any] = {"model": model, "cutoff_len": cutoff_len, "eval_names": evals}
    total = sum(rows_of([*names, *evals], dataset_dir)) if sys.stderr.isatty() and not as_json else 0
    if total >= BAR_FROM:
        from rich.progress import Progress

        with Progress(console=console(stderr=True), transient=True) as bar:
            task = bar.add_task("measuring token lengths", total=total)
            result = report(list(names), dataset_dir, progress=lambda n: bar.advance(task, n), **kwargs)
    else:
        result = report(list(names), dataset_dir, **kwargs)
    if as_json:
        emit_json(result.to_json())
    else:
        _print(result)
    if not result.ok:
        sys.exit(1)


def _print(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{result.dataset_dir}: token lengths {result.method}", title_justify="left")
    for column in ("dataset", "format", "rows", "problems", "duplicates", "p50", "p90", "p99", "max",
                   f"> {result.cutoff_len}"):
        table.add_column(column, justify="left" if column in ("dataset", "format") else "right")
    for d in result.datasets:
        n = d.lengths
        table.add_row(d.name + (" (eval)" if d.eval else ""), d.formatting, f"{d.rows:,}", f"{d.problem_count:,}",
                      f"{d.duplicates:,}", *(f"{v:,}" for v in (n.p50, n.p90, n.p99, n.max)), f"{d.truncated:,}")
    console().print(table)
    for d in result.datasets:
        for line in d.problems:
            click.echo(f"problem: {d.name}: {line}")
        if d.problem_count > len(d.problems):
            click.echo(f"problem: {d.name}: ... {d.problem_count - len(d.problems):,} more")
        if d.duplicates:
            click.echo(f"duplicates: {d.name}: {d.duplicates:,} rows repeat an earlier row exactly (with val_size "
                       "they can land on both sides of the split)")
        if d.overlap.get("same_prompt"):
            click.echo(f"leakage: {d.name}: {d.overlap['same_sample']:,} rows are also in the training sets, "
                       f"{d.overlap['same_prompt']:,} share a prompt with them")
    count = result.lengths.count
    share = f"{result.truncated / count:.1%}" if count else "0%"
    click.echo(f"cutoff_len {result.cutoff_len} truncates {result.truncated:,} of {count:,} training samples "
               f"({share}); R-DATA-CUTOFF would write cutoff_len {result.suggested_cutoff} ({result.suggested_how})")


COMMANDS = (data,)
