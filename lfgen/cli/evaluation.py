"""``lfgen eval``: generate on a run's held-out rows with LlamaFactory and score the answers."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.options import executor_for, ray_eval_options
from lfgen.cli.output import CONTEXT, stoppable


def eval_options(function: Any) -> Any:
    """The generation options ``lfgen eval`` and ``lfgen run --eval`` share."""
    for option in reversed((
            click.option("--max-samples", type=int, help="Score at most N held-out rows (a fast check; recorded "
                         "with the score)."),
            click.option("--batch-size", type=int, help="Generation batch size (default: the run's "
                         "per_device_eval_batch_size, else 8)."),
            click.option("--max-new-tokens", type=int, default=128, show_default=True),
            click.option("--temperature", type=float, default=0.0, show_default=True,
                         help="0 decodes greedily, so scores are deterministic."))):
        function = option(function)
    return function


def generation_options(max_samples: int | None, batch_size: int | None, max_new_tokens: int, temperature: float) -> Any:
    from lfgen.training.evaluate import EvalOptions

    options = EvalOptions(max_samples, batch_size, max_new_tokens, temperature)
    options.check()
    return options


def _is_run_dir(path: Any) -> bool:
    from lfgen.layout import CONFIG_FILES

    return path.is_dir() and any((path / name).is_file() for name in CONFIG_FILES)


def echo_outcome(outcome: Any) -> None:
    """One line per run: its scores, why it was skipped, or why its evaluation failed."""
    from lfgen.cli.progress import outcome_line

    click.echo(outcome_line(outcome), err=True)


@click.command(name="eval", context_settings=CONTEXT)
@click.argument("target", metavar="RUN_DIR|EXPERIMENT")
@eval_options
@click.option("--force", is_flag=True, help="Score runs that are already scored again.")
@ray_eval_options
@click.option("--experiments-dir", default="experiments", show_default=True)
def eval_command(target: str, max_samples: int | None, batch_size: int | None, max_new_tokens: int,
                 temperature: float, force: bool, ray_address: str | None, cpus_per_run: float, gpus_per_run: int,
                 experiments_dir: str) -> None:
    """Generate on each run's held-out rows (llamafactory-cli train with do_predict) and score them.

    The run's eval_dataset, or the rows val_size held out in training, never training rows.
    LlamaFactory writes BLEU-4 and ROUGE-1/2/L; lfgen adds exact-match and answer accuracy, samples
    scored and tokens/s, all in RUN_DIR/eval/. An experiment's evaluations are recorded in its state:
    a killed lfgen eval resumes and scored runs are not scored again (--force re-scores). With --ray,
    each run is evaluated in a Ray task, all at once, on the node that holds its adapter (any node
    when it trained on --storage); the scores come home into the driver's outputs. docs/cluster.md

    \b
    Examples:
      lfgen eval outputs/rank-sweep/rank-64
      lfgen eval experiments/rank-sweep --max-samples 200
      lfgen eval rank-sweep --ray 10.0.0.1:6379
      lfgen eval rank-sweep --ray --max-new-tokens 64    # a local Ray instance
      lfgen compare experiments/rank-sweep --sort -predict_rouge-l
    """
    from lfgen.training.evaluate import evaluate
    from lfgen.training.evaluations import Outcome, evaluate_experiment
    from lfgen.yamlio import check_path

    options = generation_options(max_samples, batch_size, max_new_tokens, temperature)
    path = check_path(target)  # a name the OS would refuse (ENAMETOOLONG) at the first look
    if _is_run_dir(path):
        if ray_address is not None:
            from lfgen.errors import InputError

            raise InputError("--ray: give the experiment (its state records where each run trained), not a run "
                             f"dir; {target} is evaluated here without --ray")
        with stoppable(f"the evaluation was stopped; lfgen eval {target} evaluates it again"):
            scores = evaluate(path, options, force=force)
        echo_outcome(Outcome(path.name, "scored" if scores else "skipped",
                             scores or _scores_on_disk(path)))
        return
    from lfgen.training.target import resolve

    resolved = resolve(target, experiments_dir)
    executor = executor_for(ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    try:
        evaluations = executor.evaluations(resolved.name, resolved.root, options)
        if (line := evaluations.describe()) is not None:
            click.echo(line, err=True)
        with stoppable(f"the running evaluations were stopped; lfgen eval {target} evaluates them again"):
            outcomes = evaluate_experiment(resolved, evaluations, force=force, progress=echo_outcome)
    finally:
        executor.close()
    if any(outcome.status == "failed" for outcome in outcomes):
        sys.exit(1)


def _scores_on_disk(run_dir: Any) -> dict[str, Any]:
    from lfgen.runs.scoring import read_eval

    return read_eval(run_dir)


COMMANDS = [eval_command]
