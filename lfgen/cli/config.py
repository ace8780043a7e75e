"""Config commands: presets, preset, explain, validate, calibrate."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.cli.options import build_options, price_option, to_build_options
from lfgen.cli.output import CONTEXT, console, emit_json, print_warnings, show

# --- presets ---------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of presets (see docs/cli.md).")
def presets(as_json: bool) -> None:
    """List the presets: rank, alpha, dropout, target, the shapes each serves, what it is for, and its source.

    A preset serves every stage (--stage sft, pt, dpo, kto, orpo, simpo, rm) with the methods that read the keys
    it pins: the seeds' presets pin a LoRA rank, so they serve LoRA; auto pins nothing and serves every method.

    \b
    Examples:
      lfgen presets
      lfgen presets --json | jq '.[] | {name, serves}'
    """
    from lfgen.builder.shapes import serves, stage_names
    from lfgen.catalogs.presets import load_presets

    stages = stage_names()
    rows = [p.model_dump() | {"alpha_ratio": p.lora.alpha_ratio,
                              "serves": {"methods": serves(p.pinned), "stages": stages}}
            for p in load_presets().values()]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title="lfgen presets (`lfgen preset NAME [--stage S] [--method M]` writes one; every preset serves "
                        f"every stage: {', '.join(stages)})", title_justify="left")
    for column in ("name", "rank", "alpha", "dropout", "target", "methods", "for", "source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        lora = row["lora"]
        table.add_row(row["name"], str(lora["rank"]), str(lora["alpha"]), f"{lora['dropout']:g}", lora["target"],
                      ", ".join(row["serves"]["methods"]), row["summary"],
                      row["source"].split(" (")[0].split(",")[0])
    console().print(table)


# --- preset ----------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("name")
@build_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o FILE.")
@click.option("--allow-unfit", is_flag=True, help="Write the config even when the memory estimate says it does not "
              "fit the GPU (R-HW-FIT; default: exit 1 naming the cheapest fix).")
def preset(name: str, output: str | None, force: bool, allow_unfit: bool, **kwargs: Any) -> None:
    """Write a LlamaFactory train YAML from preset NAME, sized for your GPU, model and data.

    Every value carries the id of the rule that chose it; `lfgen explain FILE` says why.
    Your options always win over the rules.

    Without --gpu it sizes for the GPU visible here, or writes a CPU config when there is none (--gpu cpu asks
    for one). With a GPU and a known model, a config the memory estimate says does not fit is an error naming the
    cheapest fix (--allow-unfit writes it anyway); the auto preset steps down (Liger, rank, 4-bit, cutoff_len)
    until it fits. With --num-gpus N the DeepSpeed JSON it picks is written beside -o FILE.

    --stage and --method pick the run's shape (DPO, KTO, ORPO, SimPO, reward model, pre-training; OFT, freeze,
    full): each has its own learning rate, keys, memory terms and data kind (docs/shapes.md).

    \b
    Examples:
      lfgen preset a800 --rank 64
      lfgen preset lightweight --gpu 4090 --model Qwen/Qwen2.5-7B-Instruct \\
          --dataset my_sft --dataset-dir data -o configs/qv.yaml
      lfgen preset lightweight --stage dpo --dataset my_pairs --dataset-dir data
      lfgen preset auto --method full --stage sft --gpu H100 --num-gpus 8
      lfgen preset auto --samples 3000 --gpu A100-40
      lfgen preset auto --model ./tiny-model --gpu cpu --dataset my_sft --dataset-dir data
      lfgen preset a800 --model Qwen/Qwen2.5-32B-Instruct --gpu H100 --num-gpus 8 -o configs/32b.yaml
      lfgen preset balanced --set seed=7 --set max_samples=1000
    """
    from lfgen.builder.render import render_build, write_preset
    from lfgen.builder.steps import build

    result = build(name, to_build_options(kwargs))
    if not allow_unfit:
        from lfgen.builder.fit_rules import require_fit

        require_fit(result)
    if output:
        path = write_preset(result, output, force=force)
        click.echo(f"wrote {path}", err=True)
    else:
        click.echo(render_build(result), nl=False)
    print_warnings(result.warnings)
    for step in result.fit_steps:
        click.echo(f"fit: {step.reason}", err=True)
    if result.estimate is not None:
        click.echo(_estimate_line(result.estimate), err=True)


def _estimate_line(estimate) -> str:
    gpu, total = estimate.gpu or {}, estimate.peak_gib
    must = f", {estimate.fit_gib:.1f} GiB of it must fit" if estimate.fit_gib < total else ""
    where = f" on {gpu['name']}" if gpu else ""
    verdict = "" if estimate.fits is None else (
        f" of {gpu['memory_gib']:g} GiB: fits" if estimate.fits else f" of {gpu['memory_gib']:g} GiB: does NOT fit")
    if estimate.unsure_fit_gib:
        verdict += f" at the estimate, not at its range's high end ({estimate.unsure_fit_gib:.1f} GiB)"
    return (f"estimate for {estimate.model['id']}{where}: {estimate.trainable_params:,} trainable parameters, "
            f"peak ~{total:.1f} GiB per GPU{must}{verdict} (lfgen explain shows the breakdown)")


# --- explain ---------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("subject", metavar="FILE|PRESET")
@build_options
@price_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON: config, decisions, warnings (docs/cli.md).")
def explain(subject: str, as_json: bool, price: float | None, **kwargs: Any) -> None:
    """Show every value of a config, the rule that chose it and why, and the warnings.

    FILE may be any LlamaFactory train YAML: for one lfgen wrote, hand edits are named;
    for others, explain says which rules the file follows and which it does not.
    With a PRESET name, explain shows what `lfgen preset` would write with the same options.
    With a known model it shows the peak memory per GPU with its range (measured on published
    peaks); with a GPU and the data size it also estimates the run's time and cost.

    \b
    Examples:
      lfgen explain configs/qv.yaml
      lfgen explain a800 --gpu 4090 --samples 2000
      lfgen explain balanced --gpu A100-80 --model Qwen/Qwen2.5-7B-Instruct --samples 20000 --price 1.8
      lfgen explain examples/train_lora/qwen3_lora_sft.yaml --json
    """
    from lfgen.builder.explain import explain as run_explain

    result = run_explain(subject, to_build_options(kwargs), price=price)
    if as_json:
        emit_json(result.to_json())
        return
    if result.kind is not None and not result.kind.is_llamafactory:
        click.echo(f"{result.source}: {result.kind.line}")
        return
    from rich.table import Table

    out = console()
    if result.kind is not None:
        click.echo(f"kind: {result.kind.label} ({result.kind.advice})")
    shape = result.shape_json()
    if shape is not None and shape["rules_not_applied"]:
        grouped: dict[str, list[str]] = {}
        for item in shape["rules_not_applied"]:
            grouped.setdefault(item["why"], []).append(item["rule"])
        click.echo(f"shape: {shape['label']}; rules not applied (their premise does not hold): "
                   + "; ".join(f"{', '.join(ids)}: {why}" for why, ids in grouped.items()))
    elif shape is not None and result.shape.vision:  # every rule holds; say the modality (docs/vlm.md)
        click.echo(f"shape: {shape['label']} (image_max_pixels, the freeze keys and the image tokens: docs/vlm.md)")
    title = f"{result.source}"
    if result.samples is not None:
        title += f" | N = {result.samples:,} samples ({result.samples_note})"
    if result.gpu:
        title += f" | {result.gpu['name']} x {result.gpu['num_gpus']}"
    table = Table(title=title, title_justify="left", show_lines=False)
    # A value (a model path, a target list) keeps its own width while the "why" column keeps 40, so the
    # reasons wrap first: folding a path at 26 characters makes it unreadable.
    longest = max((len(show(d.value)) for d in result.decisions), default=5)
    keys = max((len(d.key) for d in result.decisions), default=10) + max((len(d.rule) for d in result.decisions),
                                                                         default=10)
    value_width = min(longest, max(12, (out.width or 140) - keys - 12 - 40))
    for column, style in (("key", "bold"), ("value", "cyan"), ("rule", "magenta"), ("why", "")):
        table.add_column(column, style=style, overflow="fold", no_wrap=column in ("key", "rule"),
                         min_width=value_width if column == "value" else None)
    for d in result.decisions:
        why = d.reason + (f"\n[dim]alternative: {d.alternative}[/dim]" if d.alternative else "")
        table.add_row(d.key, show(d.value), d.rule, why)
    out.print(table)
    if result.suggestions:
        extra = Table(title="Rules this file does not follow (lfgen would write these)", title_justify="left")
        for column in ("key", "value", "rule", "why"):
            extra.add_column(column, overflow="fold")
        for d in result.suggestions:
            extra.add_row(d.key, show(d.value), d.rule, d.reason)
        out.print(extra)
    for step in result.fit_steps:
        out.print(f"fit: {step.reason}", markup=False)
    if result.estimate is not None:
        _print_estimate(out, result.estimate)
        _print_time(out, result.run_cost)
    elif result.estimate_note:
        out.print(f"no memory estimate: {result.estimate_note}", markup=False)
    for problem in result.problems:
        click.echo(f"problem: {result.source}: {problem} (lfgen validate checks the file)", err=True)
    print_warnings(result.warnings)


def _print_estimate(out, estimate) -> None:
    from lfgen.catalogs.rules import headroom
    from rich.table import Table

    model = estimate.model
    where = f"on {', '.join(estimate.target_modules)}" if estimate.target_modules else "(every parameter)"
    if estimate.finetuning_type == "freeze":
        where = f"(freeze: {', '.join(estimate.target_modules)} of the trainable layers)"
    table = Table(title=f"{model['id']} ({model['architecture']}, {model['params'] / 1e9:.2f}B parameters): "
                        f"{estimate.trainable_params:,} trainable {where}",
                  title_justify="left")
    table.add_column("memory per GPU")
    table.add_column("GiB", justify="right")
    for part, value in estimate.memory_gib.items():
        label = "of which releasable cache" if part == "releasable_cache" else part.replace("_", " ")
        table.add_row(label, f"{value:.2f}")
    out.print(table)
    if estimate.memory_gib.get("releasable_cache"):
        out.print("note: varying batch lengths leave the longest batch's freed loss buffers cached (the overhead's "
                  "releasable cache): nvidia-smi shows them, but the allocator frees them before an out-of-memory, "
                  "so the fit does not count them (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True avoids them)",
                  markup=False)
    found = estimate.peak_range
    span = found.to_json() if found else None
    if span:
        releasable = estimate.fit_gib < estimate.peak_gib
        out.print(f"range: {span['basis']}: " + (f"must fit {span['fit_low']:.1f}-{span['fit_high']:.1f} GiB, "
                                                  if releasable else "")
                  + f"peak {span['low']:.1f}-{span['high']:.1f} GiB", markup=False)
    else:
        out.print("range: the estimate is calibrated from your own runs (lfgen calibrate), so the range measured on "
                  "published peaks no longer applies", markup=False)
    gpu = estimate.gpu
    if gpu is not None:
        verdict = "fits" if estimate.fits else "does not fit"
        if estimate.unsure_fit_gib:
            verdict += (f" at the estimate, not at the range's high end ({estimate.unsure_fit_gib:.1f} GiB): check "
                        "with a short first run (lfgen calibrate stores what it measured)")
        out.print(f"verdict: {estimate.fit_gib:.1f} GiB on {gpu['name']} ({gpu['memory_gib']:g} GiB, "
                  f"{gpu.get('headroom', headroom()):.0%} kept free): {verdict}")
    for note in estimate.notes:
        out.print(f"note: {note}", markup=False)


def _print_time(out, run_cost) -> None:
    from lfgen.numbers import duration

    if run_cost is None:
        return
    if run_cost.time is None:
        out.print(run_cost.note, markup=False)
        return
    t, basis = run_cost.time, run_cost.basis
    startup = f" + start-up ~{duration(basis['startup_s'])}" if basis.get("startup_s") else ""
    out.print(f"time: train ~{duration(t['train_s'])} + eval ~{duration(t['eval_s'])}{startup} "
              f"(range {duration(t['low_s'])} to {duration(t['high_s'])}): {t['tokens']:,} tokens at "
              f"~{t['tokens_per_s']:,.0f} tokens/s, "
              f"{basis['optimizer_steps']:,} optimizer steps, {basis['evaluations']} evaluation(s)", markup=False)
    if run_cost.cost is not None:
        c = run_cost.cost
        out.print(f"cost: ~${c['usd']:,.2f} at ${c['usd_per_gpu_hour']:g} per GPU-hour ({c['price_source']})",
                  markup=False)
    for note in [*basis["notes"], *([run_cost.note] if run_cost.note else [])]:
        out.print(f"note: {note}", markup=False)


# --- validate --------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--no-parser", is_flag=True, help="Skip LlamaFactory's own parser (faster; lfgen's checks only).")
@click.option("--dataset-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Check the dataset names against DIR/dataset_info.json instead of each file's dataset_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: ok, llamafactory, files[] (docs/cli.md).")
def validate(files: tuple[str, ...], no_parser: bool, dataset_dir: str | None, as_json: bool) -> None:
    """Check config files and report every problem of every file at once; exit 1 if any.

    lfgen checks types, choices and ranges (LlamaFactory's parser does not), unknown keys
    (with did-you-mean), the chat template and the dataset names; then LlamaFactory's own
    parser runs on all files in one subprocess when it is installed (the parser of the file's
    command: train, chat, export, eval), from the current directory as llamafactory-cli would.
    A file that is not a LlamaFactory config (DeepSpeed, accelerate, v1) gets one note and is skipped.

    \b
    Examples:
      lfgen validate configs/*.yaml
      lfgen validate experiments/rank-sweep/runs/*.yaml --json
    """
    from lfgen.builder.validate import validate as run_validate

    report = run_validate(list(files), run_parser=not no_parser, dataset_dir=dataset_dir)
    if as_json:
        emit_json(report.to_json())
    else:
        for item in report.files:
            for problem in item.problems:
                click.echo(f"{item.path}: {problem}")
            for note in item.notes:
                click.echo(f"note: {item.path}: {note}", err=True)
            if item.cannot_run_here:
                click.echo(f"warning: {item.path}: {item.cannot_run_here}", err=True)
        if "note" in report.llamafactory:
            click.echo(f"note: {report.llamafactory['note']}", err=True)
        bad = [f for f in report.files if not f.ok]
        problems = sum(len(f.problems) for f in bad)
        skipped = sum(not f.checked for f in report.files)
        elsewhere = sum(bool(f.cannot_run_here) for f in report.files if f.ok)
        summary = (f"{len(files)} file(s) valid" if not bad else
                   f"{len(bad)} of {len(files)} file(s) have problems ({problems} in all)")
        if elsewhere:
            summary += f"; {elsewhere} valid only on a GPU: this machine has none, so lfgen run here would fail"
        if skipped:
            summary += f"; {skipped} not a LlamaFactory config (skipped)"
        click.echo(summary, err=True)
    if not report.ok:
        sys.exit(1)


@click.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--gpu", help="The GPU (or CPU) the runs trained on, when neither their lfgen_env.json nor their "
              "recipe says.")
@click.option("--dry-run", is_flag=True, help="Show estimates against measurements; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: runs, factors, time_runs, time_factors, skipped.")
def calibrate(run_dirs: tuple[str, ...], gpu: str | None, dry_run: bool, as_json: bool) -> None:
    """Compare the memory and time estimates with what LlamaFactory measured, and store corrections.

    Memory: lfgen run sets RECORD_VRAM=1, so each run's trainer_log.jsonl holds its measured
    vram_reserved; the median measured/estimated ratio per GPU and model family scales later
    estimates and the fit-to-GPU sizing. Time: each finished run's train and eval runtime against
    the time model's seconds; the median ratio per device and method (with the measured start-up)
    corrects later time estimates (explain, sweep and tune --dry-run, status, tune --budget), which
    say "calibrated from N runs". Runs trained on the CPU calibrate time on the CPU. Stored in
    ~/.config/lfgen/calibration.json, or $LFGEN_CALIBRATION.

    \b
    Examples:
      lfgen calibrate outputs/rank-sweep/*
      lfgen calibrate outputs/qv --gpu A800 --dry-run
    """
    from lfgen.builder.calibration import calibrate as run_calibrate
    from lfgen.builder.estimates import calibration_path
    from lfgen.numbers import duration

    found = run_calibrate(list(run_dirs), gpu, store=not dry_run)
    if as_json:
        emit_json(found.to_json())
        return
    from rich.table import Table

    if found.memory:
        table = Table(title="memory estimate against LlamaFactory's measured peak (vram_reserved)",
                      title_justify="left")
        for column in ("run", "model", "GPU", "estimate GiB", "measured GiB", "error"):
            table.add_column(column)
        for r in found.memory:
            table.add_row(r.run, r.model, r.gpu, f"{r.estimate_gib:.2f}", f"{r.measured_gib:.2f}", f"{r.error:+.1%}")
        console().print(table)
    if found.times:
        table = Table(title="time estimate (uncalibrated) against the trainer's measured train + eval runtime",
                      title_justify="left")
        for column in ("run", "device", "method", "estimate", "measured", "error", "start-up"):
            table.add_column(column)
        for t in found.times:
            table.add_row(t.run, t.gpu, t.method, f"{t.estimate_s:.1f}s", f"{t.measured_s:.1f}s", f"{t.error:+.1%}",
                          duration(t.startup_s) if t.startup_s is not None else "-")
        console().print(table)
    where = "" if dry_run else f", stored in {calibration_path()}"
    for key, value in found.factors.items():
        click.echo(f"factor {value['factor']:.3f} for {key.replace('|', ' / ')} ({value['runs']} run(s)){where}",
                   err=True)
    for key, value in found.time_factors.items():
        startup = f", start-up {value['startup_s']:g}s per run" if "startup_s" in value else ""
        click.echo(f"time x{value['factor']:.3g} for {key.removeprefix('time|').replace('|', ' / ')} "
                   f"({value['runs']} run(s){startup}){where}", err=True)
    for run, what, why in found.skipped:
        click.echo(f"note: no {what} calibration from {run}: {why.removeprefix(f'{run}: ')}", err=True)


COMMANDS = (presets, preset, explain, validate, calibrate,)
