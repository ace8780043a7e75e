"""The ``lfgen`` command line: a thin click layer over the library.

Each command parses its options, calls one library function and prints the result:
data on stdout, messages on stderr. ``LfgenError`` becomes one ``Error: ...`` line and
exit 1 here and only here; click's usage errors exit 2. Library modules are imported
inside the commands so ``lfgen --help`` never pays for pydantic, pandas or jinja2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from lfgen import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
      lfgen presets                          # the recommended presets
      lfgen preset a800 --rank 64            # a LlamaFactory train YAML on stdout
      lfgen preset lightweight --gpu 4090 -o configs/qv.yaml
      lfgen explain configs/qv.yaml          # the rule behind every value
      lfgen validate configs/*.yaml          # every problem of every file

    Shell completion: eval "$(_LFGEN_COMPLETE=bash_source lfgen)" (zsh_source, fish_source).
    """


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output has no terminal width; 140 columns keeps keys and rule ids on one line.
    width = None if stream.isatty() else 140
    return Console(file=stream, highlight=False, soft_wrap=False, width=width)


# --- presets ---------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of presets (see docs/cli.md).")
def presets(as_json: bool) -> None:
    """List the presets: rank, alpha, dropout, target, what each is for, and its source.

    \b
    Examples:
      lfgen presets
      lfgen presets --json | jq '.[].name'
    """
    from lfgen.presets import load_presets

    rows = [p.model_dump() | {"alpha_ratio": p.lora.alpha_ratio} for p in load_presets().values()]
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table

    table = Table(title="lfgen presets (`lfgen preset NAME` writes one)", title_justify="left")
    for column in ("name", "rank", "alpha", "dropout", "target", "for", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        lora = row["lora"]
        table.add_row(row["name"], str(lora["rank"]), str(lora["alpha"]), f"{lora['dropout']:g}", lora["target"],
                      row["summary"], row["source"].split(" (")[0].split(",")[0])
    _console().print(table)


# --- preset ----------------------------------------------------------------------------------------


def build_options(func):
    """The options every command that builds a config shares (preset, explain; sweep later)."""
    options = [
        click.option("--model", help="Hugging Face id or local folder (default: the seed's Qwen/Qwen2-7B-Instruct)."),
        click.option("--template", help="LlamaFactory chat template (default: from the model's family)."),
        click.option("--rank", type=int, help="LoRA rank; alpha follows (2 x rank) unless --alpha is given."),
        click.option("--alpha", type=int, help="LoRA alpha."),
        click.option("--dropout", type=float, help="LoRA dropout, in [0, 1)."),
        click.option("--target", help="qv, attn, mlp, all, or module names (q_proj,v_proj)."),
        click.option("--lr", type=float, help="Learning rate (LoRA: 1e-4 to 5e-4)."),
        click.option("--epochs", type=float, help="num_train_epochs."),
        click.option("--cutoff-len", type=int, help="Maximum tokens per sample."),
        click.option("--dataset", help="Dataset name(s) from dataset_info.json, comma-separated."),
        click.option("--dataset-dir", help="Folder with dataset_info.json (its rows size the data rules)."),
        click.option("--samples", type=int, help="Number of training samples (instead of counting them)."),
        click.option("--output-dir", help="LlamaFactory output_dir (default: outputs/<model>-<preset>-r<rank>)."),
        click.option("--gpu", help="GPU name from the catalog: 4090, A100-80, H200, ... (see docs/cli.md)."),
        click.option("--gpu-mem", type=float, help="GPU memory in GB, when the GPU is not in the catalog."),
        click.option("--num-gpus", type=int, default=1, show_default=True, help="GPUs the run uses."),
        click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]),
                     help="Force a precision (default: bf16 where the GPU has it, else fp32)."),
        click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
                     help="Any other LlamaFactory key; repeatable (--set seed=7 --set max_samples=1000)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options(kwargs: dict[str, Any]):
    from lfgen.builder import BuildOptions, parse_set

    dataset = kwargs.pop("dataset")
    set_values = parse_set(kwargs.pop("set_"))
    return BuildOptions.parse(**kwargs, dataset=[d for d in dataset.split(",") if d.strip()] if dataset else None,
                              set=set_values)


def _print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("name")
@build_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o FILE.")
def preset(name: str, output: str | None, force: bool, **kwargs: Any) -> None:
    """Write a LlamaFactory train YAML from preset NAME, sized for your GPU, model and data.

    Every value carries the id of the rule that chose it; `lfgen explain FILE` says why.
    Your options always win over the rules.

    \b
    Examples:
      lfgen preset a800 --rank 64
      lfgen preset lightweight --gpu 4090 --model Qwen/Qwen2.5-7B-Instruct \\
          --dataset my_sft --dataset-dir data -o configs/qv.yaml
      lfgen preset auto --samples 3000 --gpu A100-40
      lfgen preset balanced --set seed=7 --set max_samples=1000
    """
    from lfgen.api import render_build, write_preset
    from lfgen.builder import build

    result = build(name, _options(kwargs))
    if output:
        path = write_preset(result, output, force=force)
        click.echo(f"wrote {path}", err=True)
    else:
        click.echo(render_build(result), nl=False)
    _print_warnings(result.warnings)
    if result.estimate is not None:
        click.echo(_estimate_line(result.estimate), err=True)


def _estimate_line(estimate) -> str:
    memory, gpu = estimate.memory_gib, estimate.gpu or {}
    total = memory.get("calibrated_total", memory["total"])
    where = f" on {gpu['name']}" if gpu else ""
    verdict = "" if estimate.fits is None else (
        f" of {gpu['memory_gib']:g} GB: fits" if estimate.fits else f" of {gpu['memory_gib']:g} GB: does NOT fit")
    return (f"estimate for {estimate.model['id']}{where}: {estimate.trainable_params:,} trainable parameters, "
            f"peak ~{total:.1f} GiB per GPU{verdict} (lfgen explain shows the breakdown)")


# --- explain ---------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("subject", metavar="FILE|PRESET")
@build_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON: config, decisions, warnings (docs/cli.md).")
def explain(subject: str, as_json: bool, **kwargs: Any) -> None:
    """Show every value of a config, the rule that chose it and why, and the warnings.

    FILE may be any LlamaFactory train YAML: for one lfgen wrote, hand edits are named;
    for others, explain says which rules the file follows and which it does not.
    With a PRESET name, explain shows what `lfgen preset` would write with the same options.

    \b
    Examples:
      lfgen explain configs/qv.yaml
      lfgen explain a800 --gpu 4090 --samples 2000
      lfgen explain examples/train_lora/qwen3_lora_sft.yaml --json
    """
    from lfgen.explainer import explain as run_explain

    result = run_explain(subject, _options(kwargs))
    if as_json:
        _emit_json(result.to_json())
        return
    from rich.table import Table

    console = _console()
    title = f"{result.source}"
    if result.samples is not None:
        title += f" | N = {result.samples:,} samples ({result.samples_note})"
    if result.gpu:
        title += f" | {result.gpu['name']} x {result.gpu['num_gpus']}"
    table = Table(title=title, title_justify="left", show_lines=False)
    for column, style in (("key", "bold"), ("value", "cyan"), ("rule", "magenta"), ("why", "")):
        table.add_column(column, style=style, overflow="fold", no_wrap=column in ("key", "rule"))
    for d in result.decisions:
        why = d.reason + (f"\n[dim]alternative: {d.alternative}[/dim]" if d.alternative else "")
        table.add_row(d.key, _show(d.value), d.rule, why)
    console.print(table)
    if result.suggestions:
        extra = Table(title="Rules this file does not follow (lfgen would write these)", title_justify="left")
        for column in ("key", "value", "rule", "why"):
            extra.add_column(column, overflow="fold")
        for d in result.suggestions:
            extra.add_row(d.key, _show(d.value), d.rule, d.reason)
        console.print(extra)
    if result.estimate is not None:
        _print_estimate(console, result.estimate)
    _print_warnings(result.warnings)


def _print_estimate(console, estimate) -> None:
    from rich.table import Table

    model = estimate.model
    table = Table(title=f"{model['id']} ({model['architecture']}, {model['params'] / 1e9:.2f}B parameters): "
                        f"{estimate.trainable_params:,} trainable on {', '.join(estimate.target_modules)}",
                  title_justify="left")
    table.add_column("memory per GPU")
    table.add_column("GiB", justify="right")
    for part, value in estimate.memory_gib.items():
        table.add_row(part.replace("_", " "), f"{value:.2f}")
    console.print(table)
    gpu = estimate.gpu
    if gpu is not None:
        total = estimate.memory_gib.get("calibrated_total", estimate.memory_gib["total"])
        verdict = "fits" if estimate.fits else "does not fit"
        console.print(f"verdict: {total:.1f} GiB on {gpu['name']} ({gpu['memory_gib']:g} GB, 15% kept free): {verdict}")
    for note in estimate.notes:
        console.print(f"note: {note}", markup=False)


def _show(value: Any) -> str:
    from lfgen.render import yaml_scalar

    return yaml_scalar(value)


# --- validate --------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--no-parser", is_flag=True, help="Skip LlamaFactory's own parser (faster; lfgen's checks only).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: ok, llamafactory, files[] (docs/cli.md).")
def validate(files: tuple[str, ...], no_parser: bool, as_json: bool) -> None:
    """Check config files and report every problem of every file at once; exit 1 if any.

    lfgen checks types, choices and ranges (LlamaFactory's parser does not), unknown keys
    (with did-you-mean), the chat template and the dataset names; then LlamaFactory's own
    parser runs on all files in one subprocess when it is installed.

    \b
    Examples:
      lfgen validate configs/*.yaml
      lfgen validate experiments/rank-sweep/runs/*.yaml --json
    """
    from lfgen.validation import validate as run_validate

    report = run_validate(list(files), run_parser=not no_parser)
    if as_json:
        _emit_json(report.to_json())
    else:
        for item in report.files:
            for problem in item.problems:
                click.echo(f"{item.path}: {problem}")
            for note in item.notes:
                click.echo(f"note: {item.path}: {note}", err=True)
        if "note" in report.llamafactory:
            click.echo(f"note: {report.llamafactory['note']}", err=True)
        bad = [f for f in report.files if not f.ok]
        problems = sum(len(f.problems) for f in bad)
        summary = (f"{len(files)} file(s) valid" if not bad else
                   f"{len(bad)} of {len(files)} file(s) have problems ({problems} in all)")
        click.echo(summary, err=True)
    if not report.ok:
        sys.exit(1)


# --- sweep -----------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
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
@build_options
def sweep(axis: str, values: tuple[str, ...], base: str | None, from_: str | None, metric: str, name: str | None,
          space: str | None, seed: int, export: str | None, no_prune: bool, experiments_dir: str, outputs_dir: str,
          force: bool, **kwargs: Any) -> None:
    """Lay out an experiment: one LlamaFactory YAML per run along AXIS.

    \b
    AXIS: rank (16 32 64 128, alpha = 2 x rank), alpha (r 2r 4r at the base rank),
          lr (1e-4 2e-4 5e-4), target (qv attn all), dropout (0.0 0.1 0.2), epochs (1 3 5);
          VALUES replace the defaults.
          grid KEY=V1,V2 ...  any LlamaFactory keys (join module names with +)
          random N --space FILE [--seed S]
          plan                seed 000's tuning order for the base, as commands

    Writes experiments/<name>/experiment.yaml and runs/<run>.yaml; each run trains in its own
    outputs/<name>/<run>. With a known model and --gpu, each run is sized to fit (micro-batch down,
    accumulation up) and one that cannot fit is dropped with the reason (--no-prune keeps it).
    An existing experiment is kept unless --force.

    \b
    Examples:
      lfgen sweep target
      lfgen sweep rank --base a800 --model ./qwen2-7b --gpu a800
      lfgen sweep lr 1e-4 2e-4 3e-4 5e-4 --base configs/mine.yaml --name lr-scan
      lfgen sweep grid lora_rank=16,32,64 learning_rate=1e-4,2e-4
      lfgen sweep random 12 --space space.yaml --seed 0
      lfgen sweep alpha --from experiments/rank-sweep
      lfgen sweep plan --base lightweight
    """
    from lfgen.api import make_sweep, sweep_plan

    options = _options(kwargs)
    if axis == "plan":
        for line in sweep_plan(base or "a800", options):
            click.echo(line)
        return
    experiment = make_sweep(axis, list(values), base=base, options=options, name=name, force=force, from_=from_,
                            metric=metric, seed=seed, space=space, export=export, prune=not no_prune,
                            experiments_dir=experiments_dir, outputs_dir=outputs_dir)
    _print_experiment(experiment)


def _print_experiment(experiment) -> None:
    from rich.table import Table

    manifest = experiment.manifest
    table = Table(title=f"{experiment.path}: {len(manifest.runs)} runs on {manifest.base}", title_justify="left")
    for column in ("run", "what varies", "trainable params", "peak memory", "fits"):
        table.add_column(column, overflow="fold")
    for run in manifest.runs:
        estimate = run.estimate or {}
        varies = ", ".join(f"{k}={_show(v)}" for k, v in run.varies.items()) or "(the base)"
        params = f"{estimate['trainable_params']:,}" if "trainable_params" in estimate else "-"
        memory = f"{estimate['memory_gib']:.1f} GiB" if "memory_gib" in estimate else "-"
        fits = {True: "yes", False: "no"}.get(estimate.get("fits"), "?")
        table.add_row(run.name, varies, params, memory, fits)
    _console().print(table)
    for dropped in manifest.dropped:
        click.echo(f"dropped {dropped['name']}: {dropped['reason']}", err=True)
    if manifest.base_from:
        source = manifest.base_from
        click.echo(f"base: run {source['run']} of {source['source']} ({source['metric']} {source['value']:.4g})",
                   err=True)
    click.echo(f"wrote {experiment.path}/{'experiment.yaml'} and {len(manifest.runs)} run configs; train one with "
               f"llamafactory-cli train {experiment.path}/{manifest.runs[0].config}", err=True)


# --- run, status, export, chat, sample ---------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("target", metavar="EXPERIMENT|CONFIG")
@click.option("--gpus", help="GPUs to share out, e.g. 0,1,2,3 or 0-7 (default: one run at a time).")
@click.option("--gpus-per-run", type=int, default=1, show_default=True, help="GPUs each run gets (torchrun).")
@click.option("--dry-run", is_flag=True, help="Print the commands, environment and GPU plan; start nothing.")
@click.option("--retry-failed", is_flag=True, help="Run failed runs again, from scratch.")
@click.option("--rerun", multiple=True, metavar="NAME", help="Run NAME again from scratch, even if done.")
@click.option("--max-oom-retries", type=int, default=3, show_default=True,
              help="Times a run that ran out of memory is retried with half the micro-batch.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed run (default: go on).")
@click.option("-q", "--quiet", is_flag=True, help="Plain log lines instead of progress bars.")
@click.option("--experiments-dir", default="experiments", show_default=True)
def run(target: str, gpus: str | None, gpus_per_run: int, dry_run: bool, retry_failed: bool, rerun: tuple[str, ...],
        max_oom_retries: int, fail_fast: bool, quiet: bool, experiments_dir: str) -> None:
    """Train every run of an experiment (or one config) with llamafactory-cli, resuming where it stopped.

    Done runs are skipped and interrupted ones resume; a run that runs out of memory is retried
    with half the micro-batch and twice the accumulation (same effective batch); a NaN loss stops
    a run at once. State lives in experiments/<name>/state.sqlite; exit 1 if a run failed,
    130 on Ctrl-C.

    \b
    Examples:
      lfgen run experiments/rank-sweep
      lfgen run configs/qv.yaml
      lfgen run rank-sweep --gpus 0,1,2,3
      lfgen run big --gpus 0-7 --gpus-per-run 8
      lfgen run rank-sweep --dry-run
    """
    from lfgen import launch
    from lfgen.runner import resolve

    resolved = resolve(target, experiments_dir)
    gpu_list = launch.parse_gpus(gpus, launch.visible_gpus()) if gpus else None
    summary = _run_experiment(resolved, quiet=quiet or dry_run, resume_hint="the next lfgen run",
                              runner_options={"gpus": gpu_list, "gpus_per_run": gpus_per_run,
                                              "max_oom_retries": max_oom_retries, "fail_fast": fail_fast},
                              run_options={"retry_failed": retry_failed, "rerun": list(rerun), "dry_run": dry_run})
    if dry_run:
        return
    click.echo(f"{resolved.name}: {len(summary.done)} done, {len(summary.failed)} failed, "
               f"{len(summary.interrupted)} interrupted, {len(summary.skipped)} not run"
               + (" (--retry-failed reruns the failed)" if summary.failed else ""), err=True)
    if summary.failed:
        sys.exit(1)


def _run_experiment(target, *, quiet: bool, resume_hint: str, runner_options: dict[str, Any] | None = None,
                    run_options: dict[str, Any] | None = None):
    """Run an experiment with progress bars on a terminal (plain lines otherwise); Ctrl-C exits 130."""
    from lfgen.progress import PlainReporter, RichReporter
    from lfgen.runner import Runner

    interactive = not quiet and sys.stderr.isatty()
    reporter = RichReporter(len(target.runs)) if interactive else PlainReporter()
    runner = Runner(target, reporter, **(runner_options or {}))
    try:
        if interactive:
            with reporter:
                return runner.run(**(run_options or {}))
        return runner.run(**(run_options or {}))
    except KeyboardInterrupt:
        click.echo(f"interrupted: the running runs were stopped and will resume with {resume_hint}", err=True)
        sys.exit(130)


@cli.command(context_settings=CONTEXT)
@click.argument("target", metavar="EXPERIMENT|CONFIG")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per run.")
@click.option("--experiments-dir", default="experiments", show_default=True)
def status(target: str, as_json: bool, experiments_dir: str) -> None:
    """Show every run of an experiment: state, step/total, last loss, eval loss, retries.

    \b
    Examples:
      lfgen status rank-sweep
      lfgen status experiments/rank-sweep --json
    """
    from lfgen.runner import resolve, status as run_status

    rows = run_status(resolve(target, experiments_dir))
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{target}", title_justify="left")
    for column in ("run", "state", "step", "loss", "eval loss", "attempts", "oom retries", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        step = f"{row['step']}/{row['total']}" if row["total"] else "-"
        note = row["reason"] or ""
        if row["state"] == "failed" and row["detail"]:
            note = f"{note}: {row['detail'].splitlines()[0][:120]}"
        table.add_row(row["run"], row["state"], step, _num(row["loss"]), _num(row["eval_loss"]),
                      str(row["attempts"]), str(row["oom_retries"]), note)
    _console().print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@cli.command(name="export", context_settings=CONTEXT)
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
    from lfgen.inference import export

    _, target = export(run_dir, export_dir, force=force)
    click.echo(f"merged model written to {target}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
def chat(run_dir: str) -> None:
    """Chat with a finished run's adapter (llamafactory-cli chat); end of input or `exit` quits.

    \b
    Examples:
      lfgen chat outputs/rank-sweep/rank-64
      printf 'hello\n' | lfgen chat outputs/rank-sweep/rank-64
    """
    from lfgen.inference import chat as run_chat

    sys.exit(run_chat(run_dir))


@cli.command(context_settings=CONTEXT)
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
    from lfgen.inference import sample as run_sample

    path = run_sample(run_dir, prompts, output, max_new_tokens=max_new_tokens)
    click.echo(f"wrote {path}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--gpu", help="The GPU the runs trained on, when their recipe does not say.")
@click.option("--dry-run", is_flag=True, help="Show estimate against measured; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: runs and factors.")
def calibrate(run_dirs: tuple[str, ...], gpu: str | None, dry_run: bool, as_json: bool) -> None:
    """Compare the memory estimate with the peak LlamaFactory measured, and store correction factors.

    lfgen run sets RECORD_VRAM=1, so each run's trainer_log.jsonl holds its measured vram_reserved.
    The median measured/estimated ratio per GPU and model family scales later estimates and the
    fit-to-GPU sizing (stored in ~/.config/lfgen/calibration.json, or $LFGEN_CALIBRATION).

    \b
    Examples:
      lfgen calibrate outputs/rank-sweep/*
      lfgen calibrate outputs/qv --gpu A800 --dry-run
    """
    from lfgen.calibration import calibrate as run_calibrate
    from lfgen.estimates import calibration_path

    rows, factors = run_calibrate(list(run_dirs), gpu, store=not dry_run)
    if as_json:
        _emit_json({"runs": [{**vars(r), "error": r.error} for r in rows], "factors": factors})
        return
    from rich.table import Table

    table = Table(title="memory estimate against LlamaFactory's measured peak (vram_reserved)", title_justify="left")
    for column in ("run", "model", "GPU", "estimate GiB", "measured GiB", "error"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.run, r.model, r.gpu, f"{r.estimate_gib:.2f}", f"{r.measured_gib:.2f}", f"{r.error:+.1%}")
    _console().print(table)
    for key, value in factors.items():
        click.echo(f"factor {value['factor']:.3f} for {key.replace('|', ' / ')} ({value['runs']} run(s))"
                   + ("" if dry_run else f", stored in {calibration_path()}"), err=True)


# --- results ---------------------------------------------------------------------------------------

FORMATS = ("table", "csv", "json", "markdown", "html")
_TABLE_COLUMNS = ("run", "state", "lora_rank", "lora_alpha", "learning_rate", "lora_target", "final_train_loss",
                  "best_eval_loss", "best_eval_step", "runtime_s", "peak_vram_gib", "diagnosis")


@cli.command(context_settings=CONTEXT)
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

    Works on any output directories (runs lfgen did not start too). Each experiment's best run
    and the next tuning step (seed 000's order) follow the table on stderr.

    \b
    Examples:
      lfgen compare outputs/
      lfgen compare outputs/rank-sweep --sort best_eval_loss --format markdown
      lfgen compare outputs/ --format csv -o runs.csv
      lfgen compare outputs/ --plot curves.png
    """
    from lfgen.results import collect, frame

    comparison = collect(path)
    df = frame(comparison, sort=sort, filter=list(filters))
    if fmt == "table":
        text = None
        _print_frame(df)
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
    _print_next_steps(df)


def _print_next_steps(df) -> None:
    for name, summary in df.attrs.get("experiments", {}).items():
        click.echo(f"{name}: best {summary.get('best_run')} ({summary.get('best_by')}); next: {summary.get('next_step')}",
                   err=True)


def _print_frame(df) -> None:
    from rich.table import Table

    columns = [c for c in _TABLE_COLUMNS if c in df.columns] + \
        [c for c in df.columns if c not in _TABLE_COLUMNS and c not in _HIDDEN]
    table = Table(title=f"{len(df)} run(s)", title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in df[columns].astype(object).where(df[columns].notna(), None).itertuples(index=False):
        table.add_row(*("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    _console().print(table)


_HIDDEN = {"path", "experiment", "predict_rouge-1", "predict_rouge-2", "samples_per_s", "final_eval_loss",
           "num_train_epochs", "lora_dropout", "effective_batch", "trainable_params"}


@cli.command(context_settings=CONTEXT)
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

    click.echo(f"wrote {write_report(path, output, sort=sort, filter=list(filters), force=force)}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=False))
@click.option("--port", type=int, default=6006, show_default=True)
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
    from lfgen.api import tensorboard_argv

    argv = tensorboard_argv(path, port=port, host=host)
    click.echo(f"TensorBoard on http://{host}:{port} ({len(argv[2].split(','))} run(s)); Ctrl-C stops it", err=True)
    child = launch.spawn(argv, cwd=".", env=dict(os.environ), log_path=None, stdin=None)
    try:
        sys.exit(child.proc.wait())
    except KeyboardInterrupt:
        launch.stop_group(child.pid, grace=5)
        sys.exit(130)


@cli.command(context_settings=CONTEXT)
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

    from lfgen.demo import prepare
    from lfgen.results import collect, frame, write_report
    from lfgen.runner import resolve

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
    click.echo(f"lfgen demo in {directory}: building a tiny model and a 3-run rank sweep", err=True)
    paths = prepare(directory)
    summary = _run_experiment(resolve(str(paths.experiment)), quiet=quiet, resume_hint="the next lfgen demo")
    comparison = collect(paths.outputs)
    df = frame(comparison, sort="best_eval_loss")
    _print_frame(df)
    _print_next_steps(df)
    write_report(comparison, paths.report, force=True)
    click.echo(f"report: {paths.report} (open it in a browser); runs: {paths.outputs}", err=True)
    if summary.failed:
        sys.exit(1)


def main() -> None:
    import os

    # pydantic scans every installed package's entry points for plugins at first use (~20 ms
    # of each start); lfgen uses none. Only this process is affected, not an importing program.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    cli(prog_name="lfgen")


if __name__ == "__main__":
    main()
