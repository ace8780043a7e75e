"""Results commands: compare, report, tensorboard."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.output import CONTEXT, console

# --- results ---------------------------------------------------------------------------------------

FORMATS = ("table", "csv", "json", "markdown", "html")
_TABLE_COLUMNS = ("run", "state", "lora_rank", "lora_alpha", "learning_rate", "lora_target", "final_train_loss",
                  "best_eval_loss", "best_eval_step", "runtime_s", "peak_vram_gib", "diagnosis")


@click.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path())
@click.option("--sort", help="Columns, comma-separated; '-' first for descending (e.g. best_eval_loss).")
@click.option("--filter", "filters", multiple=True, metavar="COND",
              help="COLUMN OP VALUE (OP: = != > >= < <= ~glob), repeatable; config keys work too.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the table to FILE.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write overlaid loss curves to a PNG.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o or --plot file.")
def compare(path: str, sort: str | None, filters: tuple[str, ...], fmt: str, output: str | None, plot: str | None,
            force: bool) -> None:
    """Compare every LlamaFactory run found under PATH: one table, with a diagnosis of each run.

    Works on any output directories (runs lfgen did not start too). PATH may also be an experiment
    folder: its runs, with the state lfgen run recorded (runs not started yet are pending rows).
    Each experiment's best run and the next tuning step (seed 000's order) follow the table on stderr.

    \b
    Examples:
      lfgen compare outputs/
      lfgen compare experiments/rank-sweep
      lfgen compare outputs/rank-sweep --sort best_eval_loss --format markdown
      lfgen compare outputs/ --format csv -o runs.csv
      lfgen compare outputs/ --plot curves.png
    """
    from lfgen.results import collect, frame

    comparison = collect(path)
    df = with_filter(frame, comparison, sort=sort, filter=list(filters))
    if fmt == "table":
        text = None
        print_frame(df)
    else:
        text = {"csv": lambda: df.to_csv(index=False), "json": lambda: df.to_json(orient="records", indent=1),
                "markdown": lambda: df.to_markdown(index=False) + "\n",
                "html": lambda: df.to_html(index=False, na_rep="")}[fmt]()
    if output:
        from lfgen.yamlio import write_new

        if text is None:
            text = df.to_string(index=False) + "\n"
        click.echo(f"wrote {write_new(output, text, force=force)}", err=True)
    elif text is not None:
        click.echo(text, nl=False)
    if plot:
        from lfgen.results import render_png
        from lfgen.yamlio import write_new

        index = {name: i for i, name in enumerate(comparison.names)}
        png = render_png([(name, comparison.runs[index[name]]) for name in df["run"]], title=str(comparison.root))
        click.echo(f"wrote {write_new(plot, png, force=force, option='--plot')}", err=True)
    print_next_steps(df)


def with_filter(call, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` with a malformed --filter made a usage error (exit 2), like any malformed
    option value."""
    from lfgen.errors import FilterError

    try:
        return call(*args, **kwargs)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--filter'") from None


def print_next_steps(df) -> None:
    for name, summary in df.attrs.get("experiments", {}).items():
        if summary.get("best_run") is None:
            click.echo(f"{name}: {summary.get('next_step')}", err=True)
            continue
        if summary.get("disagreement"):
            click.echo(f"{name}: {summary['disagreement']}", err=True)
        click.echo(f"{name}: best {summary.get('best_run')} ({summary.get('best_by')}); next: {summary.get('next_step')}",
                   err=True)


def print_frame(df) -> None:
    from rich.table import Table

    columns = [c for c in _TABLE_COLUMNS if c in df.columns] + \
        [c for c in df.columns if c not in _TABLE_COLUMNS and c not in _HIDDEN]
    table = Table(title=f"{len(df)} run(s)", title_justify="left")
    cells = [["-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
             for row in df[columns].astype(object).where(df[columns].notna(), None).itertuples(index=False)]
    out = console()
    labels = [_LABELS.get(column, column) for column in columns]
    natural = [max([len(row[i]) for row in cells] + [max(map(len, label.split()))]) for i, label in enumerate(labels)]
    # When every cell fits on one line, keep it there (a folded q_proj,v_proj is hard to read); else rich folds.
    fits = sum(natural) + 3 * len(natural) + 1 <= (out.width or 140)
    for label, width in zip(labels, natural):
        table.add_column(label, overflow="fold", min_width=width if fits else None)
    for row in cells:
        table.add_row(*row)
    out.print(table)


# Short headers for the terminal table (the data's own names are in --format csv/json and the report).
_LABELS = {"lora_rank": "rank", "lora_alpha": "alpha", "learning_rate": "lr", "lora_target": "target",
           "final_train_loss": "train loss", "best_eval_loss": "best eval", "best_eval_step": "at step",
           "runtime_s": "time s", "peak_vram_gib": "VRAM GiB", "predict_rouge-l": "ROUGE-L",
           "predict_bleu-4": "BLEU-4", "accuracy": "exact", "eval_rewards/accuracies": "pref acc",
           "eval_rewards/margins": "margin", "eval_accuracy": "RM acc"}
# The terminal table keeps what ranks and diagnoses runs; --format csv/json/html and the report have every column.
_HIDDEN = {"path", "experiment", "predict_rouge-1", "predict_rouge-2", "samples_per_s", "final_eval_loss",
           "num_train_epochs", "lora_dropout", "effective_batch", "trainable_params", "device", "llamafactory_version",
           "answer_accuracy", "samples_scored", "eval_time_s", "tokens_per_s", "eval_rewards/chosen",
           "eval_rewards/rejected"}


@click.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="report.html", show_default=True)
@click.option("--sort", help="As in lfgen compare.")
@click.option("--filter", "filters", multiple=True, metavar="COND", help="As in lfgen compare.")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
def report(path: str, output: str, sort: str | None, filters: tuple[str, ...], force: bool) -> None:
    """Write one self-contained HTML report: table, curves, diagnoses, best run and next step.

    Images are embedded; it opens in a browser with no server.

    \b
    Examples:
      lfgen report outputs/rank-sweep -o report.html
    """
    from lfgen.results import write_report

    written = with_filter(write_report, path, output, sort=sort, filter=list(filters), force=force)
    click.echo(f"wrote {written}", err=True)


@click.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=False))
@click.option("--port", type=click.IntRange(0, 65535), default=6006, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def tensorboard(path: str, port: int, host: str) -> None:
    """Start TensorBoard over every run found under PATH, each under its run name.

    \b
    Examples:
      lfgen tensorboard outputs/
      lfgen tensorboard outputs/rank-sweep --port 6007
    """
    import os

    from lfgen import launch

    from lfgen.runs.discover import tensorboard_dirs

    argv = launch.tensorboard_argv(tensorboard_dirs(path), port=port, host=host)
    click.echo(f"TensorBoard on http://{host}:{port} ({len(argv[2].split(','))} run(s)); Ctrl-C stops it", err=True)
    child = launch.spawn(argv, cwd=".", env=dict(os.environ), log_path=None, stdin=None)
    try:
        sys.exit(child.proc.wait())
    except KeyboardInterrupt:
        launch.stop_group(child.pid, grace=5)
        sys.exit(130)


COMMANDS = (compare, report, tensorboard,)
