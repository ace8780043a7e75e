"""Experiment commands: sweep (lay one out), run (train it), status."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.evaluation import eval_options, generation_options
from lfgen.cli.options import build_options, executor_for, price_option, ray_options, to_build_options
from lfgen.cli.output import CONTEXT, console, emit_json, show, stoppable

# --- sweep -----------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("axis")
@click.argument("values", nargs=-1)
@click.option("--base", help="Preset name or config file the runs start from (default: a800).")
@click.option("--from", "from_", metavar="EXPERIMENT|OUTPUTS",
              help="Staged tuning: start from the best finished run there (by --metric).")
@click.option("--metric", default="eval_loss", show_default=True,
              help="What 'best' means for --from (losses: lowest; scores such as predict_rouge-l: highest).")
@click.option("--name", help="Experiment name (default: <axis>-sweep).")
@click.option("--space", type=click.Path(dir_okay=False), help="random: the space file (ranges, log, choices).")
@click.option("--seed", type=int, default=0, show_default=True, help="random: the sampling seed.")
@click.option("--export", type=click.Choice(["wandb"]), help="Also write a W&B sweep of the same values.")
@click.option("--no-prune", is_flag=True, help="Keep runs the memory estimate says cannot fit the GPU.")
@click.option("--experiments-dir", default="experiments", show_default=True)
@click.option("--outputs-dir", default="outputs", show_default=True, help="Runs train in OUTPUTS/<name>/<run>.")
@click.option("--force", is_flag=True, help="Replace an existing experiment of the same name.")
@click.option("--dry-run", is_flag=True, help="Show the runs with their time, GPU-hours and cost first; write nothing.")
@price_option
@build_options
def sweep(axis: str, values: tuple[str, ...], base: str | None, from_: str | None, metric: str, name: str | None,
          space: str | None, seed: int, export: str | None, no_prune: bool, experiments_dir: str, outputs_dir: str,
          force: bool, dry_run: bool, price: float | None, **kwargs: Any) -> None:
    """Lay out an experiment: one LlamaFactory YAML per run along AXIS.

    \b
    AXIS: rank (16 32 64 128, alpha = 2 x rank), alpha (r 2r 4r at the base rank, the
          base's learning rate held), lr (0.5x 1x 2.5x the base's R-LR-RANK rate; a full
          fine-tune or a preference stage spans its own band), beta (pref_beta of a DPO,
          KTO, ORPO or SimPO base, log-spaced), target (qv attn all), dropout (0.0 0.1
          0.2), epochs (1 3 5), vision (freeze_vision_tower true false: a vision-language
          base's tower frozen or trained, seed 000); VALUES replace the defaults.
          grid KEY=V1,V2 ...  any LlamaFactory keys (join module names with +)
          random N --space FILE [--seed S]
          plan                seed 000's tuning order for the base, as commands

    Writes experiments/<name>/experiment.yaml and runs/<run>.yaml; each run trains in its own
    outputs/<name>/<run>. With a known model and --gpu, each run is sized to fit (micro-batch down,
    accumulation up) and one that cannot fit is dropped with the reason (--no-prune keeps it).
    With --num-gpus N the DeepSpeed JSON the runs use is written once in experiments/<name>/; runs on
    more than 50,000 rows share one tokenized copy of their data (tokenized_path, per data setting).
    An existing experiment is kept unless --force. --dry-run shows the experiment's GPU-hours and
    cost first (each run's time on its --gpu, else on this machine; calibrated by lfgen calibrate).

    \b
    Examples:
      lfgen sweep target
      lfgen sweep rank --base a800 --model ./qwen2-7b --gpu a800
      lfgen sweep lr 1e-4 2e-4 3e-4 5e-4 --base configs/mine.yaml --name lr-scan
      lfgen sweep beta --base configs/dpo.yaml
      lfgen sweep grid lora_rank=16,32,64 learning_rate=1e-4,2e-4
      lfgen sweep random 12 --space space.yaml --seed 0
      lfgen sweep alpha --from experiments/rank-sweep
      lfgen sweep rank --base a800 --model Qwen/Qwen2.5-7B-Instruct --gpu A100-80 --samples 20000 --dry-run
      lfgen sweep plan --base lightweight
    """
    from lfgen.experiments.make import make_sweep, sweep_plan

    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")  # bad input, dry run or not: refused before anything is built
    options = to_build_options(kwargs)
    if axis == "plan":
        for line in sweep_plan(base or "a800", options):
            click.echo(line)
        return
    made = make_sweep(axis, list(values), base=base, options=options, name=name, force=force, from_=from_,
                      metric=metric, seed=seed, space=space, export=export, prune=not no_prune,
                      experiments_dir=experiments_dir, outputs_dir=outputs_dir, dry_run=dry_run, price=price)
    if dry_run:
        from lfgen.cli.output import cost_lines

        for line in cost_lines(made.cost, f"{len(made.cost.runs)} run(s)"):
            click.echo(line)
        _print_experiment(made.experiment, dict(made.cost.runs))
        click.echo(f"dry run: nothing written; without --dry-run lfgen sweep writes {made.experiment.path}", err=True)
        return
    _print_experiment(made)


def _print_experiment(experiment, costs: dict[str, Any] | None = None) -> None:
    from rich.table import Table

    from lfgen.cli.output import gpu_hours
    from lfgen.numbers import duration

    manifest = experiment.manifest
    table = Table(title=f"{experiment.path}: {len(manifest.runs)} runs on {manifest.base}", title_justify="left")
    timed = ("time", "GPU-h", "cost") if costs is not None else ()
    for column in ("run", "what varies", "trainable params", "peak memory", "fits", *timed):
        table.add_column(column, overflow="fold")
    for run in manifest.runs:
        estimate = run.estimate or {}
        varies = ", ".join(f"{k}={show(v)}" for k, v in run.varies.items()) or "(the base)"
        params = f"{estimate['trainable_params']:,}" if "trainable_params" in estimate else "-"
        memory = f"{estimate['memory_gib']:.1f} GiB" if "memory_gib" in estimate else "-"
        if "fit_gib" in estimate:  # the peak holds the allocator's releasable cache; the fit is decided without it
            memory += f" ({estimate['fit_gib']:.1f} must fit)"
        fits = {True: "yes", False: "no"}.get(estimate.get("fits"), "?")
        cells = []
        if costs is not None:
            cost = costs[run.name]
            cells = [duration(cost.wall_s), gpu_hours(cost.gpu_hours),
                     f"${cost.cost['usd']:,.2f}" if cost.cost else "-"]
        table.add_row(run.name, varies, params, memory, fits, *cells)
    console().print(table)
    for dropped in manifest.dropped:
        click.echo(f"dropped {dropped['name']}: {dropped['reason']}", err=True)
    if manifest.base_from:
        source = manifest.base_from
        click.echo(f"base: run {source['run']} of {source['source']} ({source['metric']} {source['value']:.4g})",
                   err=True)
    if costs is None:
        click.echo(f"wrote {experiment.path}/experiment.yaml and {len(manifest.runs)} run configs; train them with "
                   f"lfgen run {experiment.path}", err=True)


# --- run, status, export, chat, sample ---------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("target", metavar="EXPERIMENT|CONFIG")
@click.option("--gpus", help="GPUs to share out, e.g. 0,1,2,3 or 0-7 (default: one run at a time).")
@click.option("--gpus-per-run", type=int, default=1, show_default=True, help="GPUs each run gets (torchrun).")
@click.option("--dry-run", is_flag=True, help="Print the commands, environment and GPU plan; start nothing.")
@click.option("--retry-failed", is_flag=True, help="Run failed runs again, from scratch.")
@click.option("--rerun", multiple=True, metavar="NAME", help="Run NAME again from scratch, even if done.")
@click.option("--retry-missing", is_flag=True, help="Retrain done runs whose output dir or results were deleted.")
@click.option("--max-oom-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Times a run that ran out of memory is retried with half the micro-batch.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed run (default: go on).")
@click.option("--force", is_flag=True, help="Train into an output dir that holds another config's finished "
              "results, replacing them; train done runs whose config was edited again.")
@click.option("-q", "--quiet", is_flag=True, help="Plain log lines instead of progress bars.")
@click.option("--progress-every", type=click.FloatRange(min=1), default=30.0, show_default=True, metavar="SECONDS",
              help="Without a terminal (or -q): a progress line per running run this often (step, loss, ETA).")
@click.option("--eval", "evaluate", is_flag=True, help="Evaluate each run right after it trains, in its slot "
              "(lfgen eval; the generation options below) while the other runs go on; with --ray, in a Ray task on "
              "the run's node.")
@eval_options
@ray_options
@click.option("--experiments-dir", default="experiments", show_default=True)
def run(target: str, gpus: str | None, gpus_per_run: int, dry_run: bool, retry_failed: bool, rerun: tuple[str, ...],
        retry_missing: bool, max_oom_retries: int, fail_fast: bool, force: bool, quiet: bool, progress_every: float,
        evaluate: bool,
        max_samples: int | None, batch_size: int | None, max_new_tokens: int, temperature: float,
        ray_address: str | None, cpus_per_run: float, storage: str | None, experiments_dir: str) -> None:
    """Train every run of an experiment (or one config) with llamafactory-cli, resuming where it stopped.

    Done runs are skipped and interrupted ones resume; a run is keyed by its config's content: a
    failed or interrupted run whose config was edited trains again from scratch, a done one is
    refused until --force. A run that runs out of memory is retried with half the micro-batch
    and twice the accumulation (same effective batch); a NaN loss stops a run at once. A done run whose results were deleted is reported, and retrained with
    --retry-missing. State lives in experiments/<name>/state.sqlite; exit 1 if a run failed,
    130 on Ctrl-C, 143 on SIGTERM (both stop the runs and record them interrupted).

    \b
    Examples:
      lfgen run experiments/rank-sweep
      lfgen run configs/qv.yaml
      lfgen run rank-sweep --gpus 0,1,2,3
      lfgen run big --gpus 0-7 --gpus-per-run 8
      lfgen run rank-sweep --dry-run
      lfgen run rank-sweep --eval --max-samples 200
      lfgen run rank-sweep --ray 10.0.0.1:6379 --storage /mnt/shared/runs
      lfgen run rank-sweep --ray 10.0.0.1:6379 --eval --max-new-tokens 64
    """
    from lfgen import launch
    from lfgen.training.target import resolve

    resolved = resolve(target, experiments_dir)
    gpu_list = launch.parse_gpus(gpus, launch.visible_gpus()) if gpus else None
    options = generation_options(max_samples, batch_size, max_new_tokens, temperature)
    executor = executor_for(ray_address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, storage=storage)
    try:
        if (line := executor.describe()) is not None:
            click.echo(line, err=True)
        evaluations = executor.evaluations(resolved.name, resolved.root, options) if evaluate and not dry_run else None
        summary = run_experiment(resolved, quiet=quiet or dry_run, resume_hint="the next lfgen run",
                                 every=progress_every, runner_options={"gpus": gpu_list, "gpus_per_run": gpus_per_run,
                                                 "max_oom_retries": max_oom_retries, "fail_fast": fail_fast,
                                                 "force": force, "executor": executor, "evaluations": evaluations},
                                 run_options={"retry_failed": retry_failed, "rerun": list(rerun), "dry_run": dry_run,
                                              "retry_missing": retry_missing})
    finally:
        executor.close()
    if dry_run:
        return
    click.echo(f"{resolved.name}: {len(summary.done)} done, {len(summary.failed)} failed, "
               f"{len(summary.interrupted)} interrupted, {len(summary.skipped)} not run"
               + (f", {len(summary.missing)} missing (--retry-missing retrains them)" if summary.missing else "")
               + (" (--retry-failed reruns the failed)" if summary.failed else ""), err=True)
    if summary.failed:
        sys.exit(1)


def run_experiment(target, *, quiet: bool, resume_hint: str, runner_options: dict[str, Any] | None = None,
                   run_options: dict[str, Any] | None = None, every: float | None = None):
    """Run an experiment with progress bars on a terminal (plain lines otherwise, a progress line per run *every*
    seconds); Ctrl-C exits 130, SIGTERM 143."""
    from lfgen.cli.progress import PROGRESS_EVERY_S, PlainReporter, RichReporter
    from lfgen.training.runner import Runner

    interactive = not quiet and sys.stderr.isatty()
    reporter = RichReporter(len(target.runs)) if interactive else PlainReporter(every=every or PROGRESS_EVERY_S)
    runner = Runner(target, reporter, **(runner_options or {}))
    with stoppable(f"the running runs were stopped and will resume with {resume_hint}"):
        if interactive:
            with reporter:
                return runner.run(**(run_options or {}))
        return runner.run(**(run_options or {}))


@click.command(context_settings=CONTEXT)
@click.argument("target", metavar="[EXPERIMENT|CONFIG]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per run (per experiment without TARGET).")
@click.option("--experiments-dir", default="experiments", show_default=True)
def status(target: str | None, as_json: bool, experiments_dir: str) -> None:
    """Show every run of an experiment: state, step/total, loss, eval loss, retries, GPU-hours, ETA.

    GPU-hours are measured (wall time x GPUs of every attempt); a running run's ETA comes from its
    own measured steps, a run still to start gets its (calibrated) estimate, and the experiment's
    ETA lays the runs left onto the slots.

    Without an experiment: every experiment under --experiments-dir, with how many of its runs
    are done, failed, running, interrupted and pending.

    \b
    Examples:
      lfgen status
      lfgen status rank-sweep
      lfgen status experiments/rank-sweep --json
    """
    from lfgen.numbers import short
    from lfgen.yamlio import check_path

    check_path(experiments_dir, "--experiments-dir")
    if target is None:
        _experiments_status(experiments_dir, as_json)
        return
    from lfgen.training.overview import experiment_eta
    from lfgen.training.overview import status as run_status
    from lfgen.training.target import resolve

    rows = run_status(resolve(target, experiments_dir))
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    from lfgen.cli.output import gpu_hours
    from lfgen.numbers import duration, setting

    tune = any(row["params"] is not None for row in rows)  # a tune's trials: their parameters and value too
    table = Table(title=f"{target}", title_justify="left")
    for column in ("run", "state", "step", "loss", "eval loss", *(("parameters", "value") if tune else ()),
                   "attempts", "oom retries", "GPU-h", "ETA", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        step = f"{row['step']}/{row['total']}" if row["total"] else "-"
        note = row["reason"] or ""
        if row["state"] == "failed" and row["detail"]:  # its first line: the cause, the fix and the log
            note = f"{note}: {row['detail'].splitlines()[0]}"
        elif row["state"] == "pruned" and row["detail"]:  # "pruned at step 4 (eval_loss 2.1)", not "pruned"
            note = row["detail"].splitlines()[0]
        trial = (", ".join(f"{k}={setting(v)}" for k, v in (row["params"] or {}).items()), short(row["value"])) \
            if tune else ()
        eta = "-" if not row["eta_s"] and row["eta_s"] is not None else duration(row["eta_s"])
        table.add_row(row["run"], row["state"], step, short(row["loss"]), short(row["eval_loss"]), *trial,
                      str(row["attempts"]), str(row["oom_retries"]), gpu_hours(row["gpu_hours"]) if row["gpu_hours"]
                      else "-", eta, note)
    console().print(table)
    _experiment_line(rows, experiment_eta(rows))


def _experiment_line(rows: list[dict[str, Any]], eta: float | None) -> None:
    """The experiment's spend and ETA under the table (stderr, like the other summaries)."""
    from lfgen.cli.output import gpu_hours
    from lfgen.numbers import duration

    spent = sum(row["gpu_hours"] for row in rows)
    left = [row for row in rows if row["eta_s"] is None or row["eta_s"] > 0]
    if not left:
        click.echo(f"{gpu_hours(spent)} GPU-hours used; nothing left to run", err=True)
        return
    when = f"done in ~{duration(eta)}" if eta is not None else "ETA unknown (a run to start has no estimate)"
    click.echo(f"{gpu_hours(spent)} GPU-hours used; {len(left)} run(s) left, {when} (running runs from their "
               "measured steps, the others from their estimate)", err=True)


def _experiments_status(experiments_dir: str, as_json: bool) -> None:
    from lfgen.training.overview import COUNTED, experiments

    rows = experiments(experiments_dir)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{experiments_dir}: {len(rows)} experiment(s)", title_justify="left")
    for column in ("experiment", "runs", *COUNTED, "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["experiment"], str(row["runs"]), *(str(row[state]) for state in COUNTED), row["note"] or "")
    console().print(table)


COMMANDS = (sweep, run, status,)
