"""``lfgen tune``: Bayesian search with early stopping over runs of one experiment (Optuna, an extra)."""

from __future__ import annotations

from typing import Any

import click

from lfgen.cli.options import build_options, executor_for, ray_options, to_build_options
from lfgen.cli.output import CONTEXT, stoppable
from lfgen.tuning.strategies import PRUNERS, SAMPLERS


@click.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("--base", help="Preset name or config file the trials start from (a new study only).")
@click.option("--space", type=click.Path(dir_okay=False),
              help="Space file (as sweep random reads, plus alpha_ratio); default: the seeds' space.")
@click.option("--trials", type=int, help="Trials the study ends with, in all (default 20; a resume may raise it).")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="How trials are proposed (default tpe).")
@click.option("--pruner", type=click.Choice(PRUNERS),
              help="Early stopping on eval loss (default asha: successive halving).")
@click.option("--metric", help="The objective (default eval_loss; losses lowest, scores highest); an lfgen eval metric "
              "(predict_rouge-l, ...) evaluates each trial after it trains.")
@click.option("--max-samples", type=int, help="With an lfgen eval --metric: score each trial on at most N "
              "held-out rows (default all; recorded with the study).")
@click.option("--max-new-tokens", type=int, help="With an lfgen eval --metric: tokens each answer may have (default "
              "128; recorded with the study).")
@click.option("--gpus", help="GPUs to share out, one trial per GPU, e.g. 0,1,2,3 (default: one at a time).")
@click.option("--seed", type=int, help="The sampler's seed (default 0).")
@click.option("--timeout", metavar="DURATION", help="Ask no new trial after this long, e.g. 2h, 30m.")
@click.option("--staged", is_flag=True, help="Seed 000's stages (rank, alpha, dropout, target), each from the "
              "last's best, then a combined final run.")
@click.option("--dry-run", is_flag=True, help="Check the space and show the plan; write and start nothing.")
@click.option("--experiments-dir", default="experiments", show_default=True)
@click.option("--outputs-dir", default="outputs", show_default=True, help="Trials train in OUTPUTS/<name>/<trial>.")
@ray_options
@build_options
def tune(name: str, base: str | None, space: str | None, trials: int | None, sampler: str | None, pruner: str | None,
         metric: str | None, max_samples: int | None, max_new_tokens: int | None, gpus: str | None, seed: int | None, timeout: str | None, staged: bool, dry_run: bool,
         experiments_dir: str, outputs_dir: str, ray_address: str | None, cpus_per_run: float, storage: str | None,
         **kwargs: Any) -> None:
    """Search for the best LoRA configuration: trials proposed by Optuna, bad ones stopped early.

    Each trial is an ordinary run of experiment NAME (runs/trial-NNN.yaml, built like a sweep's
    runs), trained by the runner (OOM retry, NaN stop, GPU slots); its eval loss is reported at
    each eval step and the pruner stops a run that is behind. The study lives in
    experiments/NAME/study.db; lfgen tune NAME again resumes it (after Ctrl-C or kill -9), and
    --trials is the total it ends with. The best trial's config is written to
    experiments/NAME/best.yaml. Needs Optuna: pip install 'lfgen[tune]'.

    \b
    Examples:
      lfgen tune lora --base a800 --model ./qwen2-7b --gpu a800 --trials 30
      lfgen tune lora --base configs/mine.yaml --space space.yaml --pruner median
      lfgen tune qa --base a800 --metric predict_rouge-l --max-samples 200 --max-new-tokens 64
      lfgen tune lora                      # resume
      lfgen tune lora --trials 40          # resume and go on to 40 trials
      lfgen tune plan --base lightweight --staged
      lfgen tune lora --base a800 --trials 64 --ray 10.0.0.1:6379 --storage /mnt/shared/lfgen
      lfgen status lora && lfgen compare experiments/lora && lfgen report experiments/lora
    """
    from lfgen import launch
    from lfgen.cli.progress import PlainReporter
    from lfgen.errors import InputError
    from lfgen.numbers import short

    from lfgen.yamlio import check_can_write

    check_can_write(experiments_dir, "--experiments-dir")  # before the study is set up, as lfgen sweep checks
    check_can_write(outputs_dir, "--outputs-dir")
    options = to_build_options(kwargs)
    gpu_list = launch.parse_gpus(gpus, launch.visible_gpus()) if gpus else None
    if ray_address is not None and gpu_list is not None:
        raise InputError("--gpus: not with --ray (Ray gives each trial its GPUs)")
    common = dict(trials=trials, sampler=sampler, pruner=pruner, metric=metric, seed=seed, timeout=timeout,
                  max_samples=max_samples, max_new_tokens=max_new_tokens,
                  gpus=gpu_list, dry_run=dry_run, reporter=PlainReporter(), say=lambda text: click.echo(text, err=True),
                  experiments_dir=experiments_dir, outputs_dir=outputs_dir)
    # each trial a Ray task with --ray (docs/cluster.md), else a child here; closed at the end
    executor = executor_for(None if dry_run else ray_address, gpus_per_run=1, cpus_per_run=cpus_per_run,
                            storage=storage)
    try:
        if (line := executor.describe()) is not None:
            click.echo(line, err=True)
        with stoppable(f"the running trials were stopped; lfgen tune {name} resumes the study"):
            if staged:
                from lfgen.tuning.staged import tune_staged

                for line in tune_staged(name, base=base, options=options, space=space, executor=executor, **common):
                    click.echo(line)
                return
            from lfgen.tuning.tuner import tune as run_tune

            result = run_tune(name, base=base, options=options, space=space, executor=executor, **common)
    finally:
        executor.close()
    if dry_run:
        for line in result.lines:
            click.echo(line)
        return
    echo_trials(result.rows)
    if result.best is not None:
        click.echo(f"best: {result.best['run']} ({short(result.best['value'])}); wrote {result.best_config}", err=True)
    else:
        click.echo("no trial completed with a finite value yet; nothing is best", err=True)


def echo_trials(rows: list[dict[str, Any]]) -> None:
    """The trials as a table: number, state, parameters, value, steps used."""
    from lfgen.numbers import short

    from rich.table import Table

    from lfgen.cli.output import console, show

    table = Table(title_justify="left")
    for column in ("trial", "state", "parameters", "value", "steps", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        params = ", ".join(f"{k}={show(v)}" for k, v in row["params"].items())
        table.add_row(str(row["number"]), row["state"], params, short(row["value"]),
                      str(row["steps"]) if row["steps"] is not None else "-", row["why"] or "")
    console().print(table)


COMMANDS = (tune,)
