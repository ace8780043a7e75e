"""lfgen demo: the whole loop on a tiny model, on the CPU, offline."""

from __future__ import annotations

import sys

import click

from lfgen.cli.experiments import run_experiment
from lfgen.cli.output import CONTEXT
from lfgen.cli.results import print_frame, print_next_steps

@click.command(context_settings=CONTEXT)
@click.argument("directory", default="lfgen-demo", type=click.Path(file_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Plain log lines instead of progress bars.")
def demo(directory: str, quiet: bool) -> None:
    """The whole loop on a tiny model, on the CPU, offline: sweep, run, compare, report.

    Builds a tiny model, tokenizer and dataset in DIRECTORY (no download), lays out a 3-run rank
    sweep, trains it, prints the comparison and writes DIRECTORY/report.html. A second run resumes.

    \b
    Examples:
      lfgen demo
      lfgen demo /tmp/try-lfgen
    """
    import os

    from lfgen.cli.evaluation import echo_outcome
    from lfgen.demo import EVAL, prepare
    from lfgen.training.evaluate import EvalOptions
    from lfgen.training.evaluations import LocalEvaluations, evaluate_experiment
    from lfgen.results import collect, frame, write_report
    from lfgen.training.target import resolve

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
    click.echo(f"lfgen demo in {directory}: building a tiny model and a 3-run rank sweep", err=True)
    paths = prepare(directory)
    target = resolve(str(paths.experiment))
    summary = run_experiment(target, quiet=quiet, resume_hint="the next lfgen demo")
    evaluate_experiment(target, LocalEvaluations(EvalOptions(**EVAL)), progress=echo_outcome)  # ROUGE, accuracy
    comparison = collect(paths.outputs)
    df = frame(comparison, sort="best_eval_loss")
    print_frame(df)
    print_next_steps(df)
    write_report(comparison, paths.report, force=True)
    click.echo(f"report: {paths.report} (open it in a browser); runs: {paths.outputs}", err=True)
    if summary.failed:
        sys.exit(1)


COMMANDS = (demo,)
