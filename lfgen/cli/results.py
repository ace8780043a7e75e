"""Results commands: compare, report, tensorboard."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.options import price_option
from lfgen.cli.output import CONTEXT, console

# --- results ---------------------------------------------------------------------------------------

FORMATS = ("table", "csv", "json", "markdown", "html")
_TABLE_COLUMNS = ("run", "state", "lora_rank", "lora_alpha", "learning_rate", "lora_target", "final_train_loss",
                  "best_eval_loss", "best_eval_step", "runtime_s", "gpu_hours", "cost", "peak_vram_gib", "diagnosis")


@click.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path())
@click.option("--sort", help="Columns, comma-separated; '-' first for descending (e.g. best_eval_loss).")
@click.option("--filter", "filters", multiple=True, metavar="COND",
              help="COLUMN OP VALUE (OP: = != > >= < <= ~glob), repeatable; config keys work too.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the table to FILE.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write overlaid loss curves to a PNG.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o or --plot file.")
@price_option
def compare(path: str, sort: str | None, filters: tuple[str, ...], fmt: str, output: str | None, plot: str | None,
            force: bool, price: float | None) -> None:
    """Compare every LlamaFactory run found under PATH: one table, with a diagnosis of each run.

    Works on any output directories (runs lfgen did not start too). PATH may also be an experiment
    folder: its runs, with the state lfgen run recorded (runs not started yet are pending rows).
    Each experiment's verdict follows the table: the best run only when the evidence names one
    (unhealthy runs diagnosed first, differences within the noise said so, unfinished runs
    provisional), its evidence, and the next tuning step (seed 000's order after what the
    experiment's family searched). --format csv/json hold it in the verdict and
    experiment_verdict columns (and say it on stderr).
    gpu_hours is measured (wall time x GPUs; outside an experiment, the trainer's runtime); cost is
    gpu_hours x the price of the run's GPU (--price, your prices file, else lfgen's dated table),
    with price_source saying which.

    \b
    Examples:
      lfgen compare outputs/
      lfgen compare experiments/rank-sweep
      lfgen compare outputs/rank-sweep --sort best_eval_loss --format markdown
      lfgen compare outputs/ --format csv -o runs.csv
      lfgen compare outputs/ --plot curves.png
    """
    from lfgen.results import collect, frame

    comparison = collect(path, price=price)
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
    if fmt == "table" and "price_source" in df.columns:
        for source in dict.fromkeys(df["price_source"].dropna()):
            click.echo(f"cost at {source}", err=True)
    print_verdicts(df, err=fmt != "table" and not output)  # stdout is the data then


def with_filter(call, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` with a malformed --filter made a usage error (exit 2), like any malformed
    option value."""
    from lfgen.errors import FilterError

    try:
        return call(*args, **kwargs)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--filter'") from None


def print_verdicts(df, *, err: bool = False) -> None:
    """Each experiment's verdict: the headline, its evidence, a disagreeing score, the next step."""
    for name, summary in df.attrs.get("experiments", {}).items():
        click.echo(f"{name}: {summary.get('headline') or summary.get('next_step')}", err=err)
        for line in summary.get("evidence") or ():
            click.echo(f"  {line}", err=err)
        if len(summary.get("searched") or ()) > 1:  # the experiments this one's base came from, oldest first
            click.echo(f"  family: {'; '.join(summary['searched'])}", err=err)
        if summary.get("disagreement"):
            click.echo(f"  note: {summary['disagreement']}", err=err)
        click.echo(f"  next: {summary.get('next_step')}", err=err)


def print_frame(df) -> None:
    from rich.table import Table

    columns = [c for c in _TABLE_COLUMNS if c in df.columns] + \
        [c for c in df.columns if c not in _TABLE_COLUMNS and c not in _HIDDEN]
    cells = [["-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
             for row in df[columns].astype(object).where(df[columns].notna(), None).itertuples(index=False)]
    out = console()
    from lfgen.results.table import LABELS, SAID_ONCE

    labels = [LABELS.get(column, column) for column in columns]
    # A setting every run shares is said once in the title (as the report does): the columns that differ fit.
    same = {i for i, column in enumerate(columns) if column in SAID_ONCE and len(cells) > 1
            and len({row[i] for row in cells}) == 1}
    title = f"{len(df)} run(s)" + ("; in every run: " + ", ".join(f"{labels[i]} {cells[0][i]}" for i in sorted(same))
                                   if same else "")
    table = Table(title=title, title_justify="left")
    labels = [label for i, label in enumerate(labels) if i not in same]
    cells = [[cell for i, cell in enumerate(row) if i not in same] for row in cells]
    natural = [max([len(row[i]) for row in cells] + [max(map(len, label.split()))]) for i, label in enumerate(labels)]
    # When every cell fits on one line, keep it there (a folded q_proj,v_proj is hard to read); else rich folds.
    fits = sum(natural) + 3 * len(natural) + 1 <= (out.width or 140)
    for label, width in zip(labels, natural):
        table.add_column(label, overflow="fold", min_width=width if fits else None)
    for row in cells:
        table.add_row(*row)
    out.print(table)


# The terminal table keeps what ranks and diagnoses runs; --format csv/json/html and the report have every column.
_HIDDEN = {"path", "experiment", "experiment_verdict", "predict_rouge-1", "predict_rouge-2", "samples_per_s", "final_eval_loss",
           "num_train_epochs", "lora_dropout", "effective_batch", "trainable_params", "device", "llamafactory_version",
           "answer_accuracy", "samples_scored", "eval_time_s", "tokens_per_s", "eval_rewards/chosen",
           "eval_rewards/rejected", "price_source"}


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
