"""Data commands: data (rows, format, duplicates, leakage and token lengths of registered datasets)."""

from __future__ import annotations

import sys
from typing import Any

import click

from lfgen.builder.option_table import STAGES
from lfgen.cli.output import CONTEXT, console, emit_json

BAR_FROM = 10_000  # rows from which a terminal gets a progress bar


@click.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--dataset-dir", default="data", show_default=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder with dataset_info.json.")
@click.option("--model", metavar="M", help="A local model folder: its tokenizer counts the tokens "
                                          "(without --model, an approximation, which the output names); for a "
                                          "vision-language model (a folder or a catalog id) its rule also counts "
                                          "the image tokens.")
@click.option("--cutoff-len", type=int, default=2048, show_default=True, metavar="N",
              help="Count the samples this cutoff_len would truncate.")
@click.option("--eval", "eval_names", metavar="NAME[,NAME]",
              help="Evaluation dataset(s): checked too, and their overlap with the training sets counted.")
@click.option("--media-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where relative image and video paths start (LlamaFactory's media_dir; default: --dataset-dir).")
@click.option("--image-max-pixels", type=click.IntRange(min=1), metavar="N",
              help="LlamaFactory's image_max_pixels for the image-token count (default 589824 = 768 x 768).")
@click.option("--image-min-pixels", type=click.IntRange(min=1), metavar="N",
              help="LlamaFactory's image_min_pixels (default 1024 = 32 x 32).")
@click.option("--template", metavar="NAME", help="LlamaFactory template whose tokens wrap the prompt (default: "
                                                "the model's, as lfgen would write it).")
@click.option("--stage", type=click.Choice(STAGES), help="Check that each dataset fits this stage (pairwise for "
              "dpo, orpo, simpo and rm; a kto_tag for kto; plain text for pt; one answer per row for sft).")
@click.option("--drop-empty", is_flag=True, help="With -o: leave out rows with an empty prompt or answer.")
@click.option("--dedupe", is_flag=True, help="With -o: leave out rows that repeat an earlier row exactly.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the dataset's cleaned copy here (.json or .jsonl) and register it in dataset_info.json.")
@click.option("--register", metavar="NAME", help="The cleaned copy's name in dataset_info.json (default: NAME_clean).")
@click.option("--force", is_flag=True, help="Replace an existing -o file or --register entry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: datasets[], train (docs/cli.md).")
def data(names: tuple[str, ...], dataset_dir: str, model: str | None, cutoff_len: int, eval_names: str | None,
         media_dir: str | None, image_max_pixels: int | None, image_min_pixels: int | None, template: str | None,
         stage: str | None, drop_empty: bool, dedupe: bool, output: str | None, register: str | None, force: bool,
         as_json: bool) -> None:
    """Check and measure datasets registered in DIR/dataset_info.json; exit 1 on format problems.

    For each: rows, its kind (SFT, pairwise, KTO or plain text) and a format check against its
    registration (alpaca or sharegpt: missing columns, wrong roles, empty prompts or answers,
    chosen/rejected, kto_tag), exact duplicates, overlap of the eval sets with the training
    sets, the token lengths (p50/p90/p99/max) and how many samples --cutoff-len would truncate,
    with the cutoff_len R-DATA-CUTOFF would write. --stage: a dataset of the wrong kind for
    that stage is a problem (LlamaFactory finds out only after loading the model). A dataset
    with an images/videos column: every file exists (under --media-dir), the <image>
    placeholders match the images, and with a vision-language --model the image tokens
    of each row, text + image lengths and the rows whose image --cutoff-len would cut.
    Token lengths are counted as LlamaFactory encodes each sample: through the chat template
    (--template, else the one lfgen writes for --model), its system prompt included.

    With -o FILE and --drop-empty and/or --dedupe: writes a cleaned copy of the one dataset NAME
    and registers it (--register, default NAME_clean), then checks the copy. preset, sweep and
    tune size runs by the usable rows either way (R-DATA-USABLE).

    \b
    Examples:
      lfgen data alpaca_en_demo --dataset-dir data
      lfgen data my_sft --eval my_eval --model models/qwen2-7b --cutoff-len 1024
      lfgen data mllm_demo --model Qwen/Qwen2.5-VL-7B-Instruct --image-max-pixels 262144
      lfgen data my_sft --json | jq .train.lengths
      lfgen data my_pairs --stage dpo
      lfgen data my_sft --drop-empty --dedupe -o data/my_sft_clean.jsonl
    """
    from lfgen.builder.data_report import report, rows_of

    evals = [n.strip() for n in (eval_names or "").split(",") if n.strip()]
    if output or drop_empty or dedupe or register:
        names = (_clean(names, dataset_dir, output, drop_empty, dedupe, register, force, quiet=as_json),)
    kwargs: dict[str, Any] = {"model": model, "cutoff_len": cutoff_len, "eval_names": evals, "media_dir": media_dir,
                              "image_max_pixels": image_max_pixels, "image_min_pixels": image_min_pixels,
                              "template": template, "stage": stage}
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


def _clean(names: tuple[str, ...], dataset_dir: str, output: str | None, drop_empty: bool, dedupe: bool,
           register: str | None, force: bool, *, quiet: bool) -> str:
    """Write and register the cleaned copy; its name, which the report then checks."""
    from lfgen.builder.data_clean import clean
    from lfgen.errors import InputError

    if output is None:
        raise InputError("--drop-empty, --dedupe and --register write a cleaned copy: give it a file with -o FILE "
                         "(e.g. -o data/my_sft_clean.jsonl)")
    if len(names) != 1:
        raise InputError(f"-o: cleans one dataset at a time (got {len(names)}: {', '.join(names)}); run it per dataset")
    done = clean(names[0], dataset_dir, output, drop_empty=drop_empty, dedupe=dedupe, register=register, force=force)
    if not quiet:
        dropped = ", ".join(f"{n:,} {what}" for n, what in ((done.empty, "empty"), (done.duplicates, "duplicate"))
                            if n) or "none"
        click.echo(f"wrote {done.path}: {done.kept:,} of {done.rows:,} rows (dropped: {dropped}); registered as "
                   f"{done.name} in {dataset_dir}/dataset_info.json: train on it with --dataset {done.name}", err=True)
    return done.name


def _print(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{result.dataset_dir}: token lengths {result.method}", title_justify="left")
    for column in ("dataset", "format", "rows", "problems", "duplicates", "p50", "p90", "p99", "max",
                   f"> {result.cutoff_len}"):
        table.add_column(column, justify="left" if column in ("dataset", "format") else "right")
    for d in result.datasets:
        n = d.lengths
        shown = d.formatting if d.kind == "supervised" else f"{d.formatting}, {d.kind}"  # pairwise, feedback, text
        table.add_row(d.name + (" (eval)" if d.eval else ""), shown, f"{d.rows:,}", f"{d.problem_count:,}",
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
        if d.media is not None:
            _print_media(d.name, d.media)
        if d.overlap.get("same_prompt"):
            click.echo(f"leakage: {d.name}: {d.overlap['same_sample']:,} rows are also in the training sets, "
                       f"{d.overlap['same_prompt']:,} share a prompt with them")
    count = result.lengths.count
    share = f"{result.truncated / count:.1%}" if count else "0%"
    click.echo(f"cutoff_len {result.cutoff_len} truncates {result.truncated:,} of {count:,} training samples "
               f"({share}); R-DATA-CUTOFF would write cutoff_len {result.suggested_cutoff} ({result.suggested_how})")


def _print_media(name: str, m: Any) -> None:
    found = m.images + m.videos - m.missing
    click.echo(f"media: {name}: {m.images:,} images, {m.videos:,} videos, {found:,} found under {m.media_dir}"
               f"{f', {m.missing:,} missing' if m.missing else ''}")
    if m.lengths is not None:
        t, n = m.image_tokens, m.lengths
        click.echo(f"image tokens: {name}: {m.rule}; per row p50 {t.p50:,}, p99 {t.p99:,}, max {t.max:,} at "
                   f"image_max_pixels {m.image_max_pixels:,}; text + image (template {m.template}) p50 {n.p50:,}, "
                   f"p99 {n.p99:,}, max {n.max:,}; {m.truncated:,} rows longer than cutoff_len {m.cutoff_len:,}")
        if m.cut:
            click.echo(f"warning: {name}: cutoff_len {m.cutoff_len:,} cuts into the image tokens of {m.cut:,} rows; "
                       "LlamaFactory crashes at the first such batch (R-VLM-TOKENS); cutoff_len >= "
                       f"{m.safe_cutoff:,} keeps every image whole")
            for line in m.cut_rows:
                click.echo(f"  cut: {line}")
    for note in m.notes:
        click.echo(f"note: {name}: {note}")


COMMANDS = (data,)
