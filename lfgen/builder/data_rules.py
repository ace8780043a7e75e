"""The rules that read the data itself, not only its size: R-DATA-CUTOFF (cutoff_len from the real
lengths) and R-DATA-STEPS (eval, save, logging and warmup intervals from the run's optimizer steps)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lfgen.builder import datasets, scale_rules
from lfgen.builder.context import Context
from lfgen.catalogs import rules
from lfgen.errors import InputError


# (names, dataset_dir, model, chat, the files' sizes and times) -> (Lengths, every length, (empty rows, duplicates)):
# a sweep builds many configs from the same data, and tokenizing it once is enough.
_MEASURED: dict[tuple[Any, ...], tuple[Any, list[int], tuple[int, int]]] = {}
_UNUSABLE: dict[tuple[Any, ...], tuple[int, int]] = {}  # the same (empty rows, duplicates) for vision-language data


def _measure(ctx: Context):
    """The token lengths of the training data, when lfgen counted its rows from local files: each sample as
    LlamaFactory will encode it, through the config's chat template (its system prompt included)."""
    from lfgen.builder import chat_lengths, data_lengths
    from lfgen.builder.data_report import samples_of

    model = str(ctx.get("model_name_or_path", ""))
    names, dataset_dir = datasets.split_names(ctx.get("dataset")), str(ctx.get("dataset_dir", "data"))
    chat = chat_lengths.Chat.of(ctx.config)
    key = (*datasets.stamp(names, dataset_dir), model, chat)
    if key not in _MEASURED:
        try:
            read = samples_of(names, dataset_dir)
        except InputError as exc:
            ctx.warn("R-DATA-CUTOFF", f"the data's lengths are unknown ({exc}); cutoff_len stays "
                                      f"{ctx.get('cutoff_len')}")
            return None, []
        lengths, method = chat_lengths.measure(read.samples, model, chat)
        _MEASURED.clear()  # one data set at a time: a long session does not keep every file's lengths
        _MEASURED[key] = (data_lengths.Lengths.of(lengths, method), lengths, (read.empty, read.duplicates))
    lengths, every, unusable = _MEASURED[key]
    _usable_rows(ctx, names, dataset_dir, *unusable)
    return lengths, every


def _unusable(names: list[str], dataset_dir: str) -> tuple[int, int]:
    """(empty rows, duplicates) of the training data, read once per data set: a vision-language run's lengths come
    from vlm_rules, not from _measure, and its rows are counted here."""
    from lfgen.builder.data_report import samples_of

    key = datasets.stamp(names, dataset_dir)
    if key not in _UNUSABLE:
        try:
            read = samples_of(names, dataset_dir)
        except InputError:
            return 0, 0  # the data's own problems are said by the rules that read it
        _UNUSABLE.clear()
        _UNUSABLE[key] = (read.empty, read.duplicates)
    return _UNUSABLE[key]


def _usable_rows(ctx: Context, names: list[str], dataset_dir: str, empty: int, duplicates: int) -> None:
    """R-DATA-USABLE: the data size counts the rows that teach something (the rules after this one read it)."""
    if not (empty or duplicates) or ctx.samples is None or "capped by max_samples" in ctx.samples_note:
        return
    usable = max(1, ctx.samples - empty - duplicates)
    parts = [f"{count:,} {what}" for count, what in ((empty, "with an empty prompt or answer"),
                                                     (duplicates, "repeating an earlier row")) if count]
    ctx.samples_note = f"{ctx.samples_note}; {usable:,} usable ({' and '.join(parts)} not counted, R-DATA-USABLE)"
    ctx.samples = usable
    drop = " ".join(flag for flag, count in (("--drop-empty", empty), ("--dedupe", duplicates)) if count)
    ctx.warn("R-DATA-USABLE", f"{' and '.join(parts)} in {', '.join(names)}: sized for {usable:,} usable rows; "
                              f"lfgen data {' '.join(names)} --dataset-dir {dataset_dir} {drop} -o FILE writes a "
                              "cleaned copy and registers it")


def data_cutoff(ctx: Context) -> None:
    """R-DATA-CUTOFF: cutoff_len from the p99 of the real lengths, capped by the model's context."""
    lengths, every = ctx.lengths, []
    if not ctx.shape.applies("R-DATA-CUTOFF"):
        return  # packed pre-training truncates no sample (R-STAGE-PT)
    from lfgen.builder import vlm_rules

    if vlm_rules.image_cutoff(ctx):  # text + image tokens at the run's image_max_pixels (R-VLM-PIXELS, R-VLM-TOKENS)
        if ctx.read_data and ctx.options.samples is None and ctx.samples is not None:
            names, dataset_dir = datasets.split_names(ctx.get("dataset")), str(ctx.get("dataset_dir", "data"))
            _usable_rows(ctx, names, dataset_dir, *_unusable(names, dataset_dir))
        return
    if lengths is None:
        if not ctx.read_data or ctx.options.samples is not None or ctx.samples is None:
            return  # --samples: no files to read; or the rows were not counted from local files
        lengths, every = _measure(ctx)
    if lengths is None or lengths.count == 0:
        return
    from lfgen.builder import data_lengths  # only with data to size: it costs ~5 ms of every `lfgen preset`

    value, how = data_lengths.cutoff_for(lengths, data_lengths.context_length(str(ctx.get("model_name_or_path"))))
    cut = data_lengths.truncated(every, value) if every else lengths.truncated or 0
    ctx.choose("cutoff_len", value, "R-DATA-CUTOFF",
               f"{how}; it truncates {cut:,} of {lengths.count:,} samples ({cut / lengths.count:.1%}); lengths "
               f"{lengths.method}", asked="--dataset-dir" if ctx.options.dataset_dir else None)
    final = ctx.get("cutoff_len", value)
    if every:
        lengths = dataclasses.replace(lengths, cutoff_len=final, truncated=data_lengths.truncated(every, final))
    ctx.lengths = lengths
    if final != value and lengths.truncated is not None and lengths.truncated > lengths.count * 0.01:
        ctx.warn("R-DATA-CUTOFF", f"cutoff_len {final} truncates {lengths.truncated:,} of {lengths.count:,} samples "
                                  f"({lengths.truncated / lengths.count:.1%}); p99 is {lengths.p99:,} tokens")
    ctx.seq_len = lengths.max  # the longest sample: a padded batch that holds it is the peak (estimates)


def intervals(ctx: Context) -> None:
    """R-DATA-STEPS: every run evaluates at least min_evals times, saves before its end and logs often
    enough for the diagnosis; the seed's intervals stay where the run is long enough for them."""
    n = ctx.samples
    if n is None:
        return
    spec = rules.rule("R-DATA-STEPS")
    seed, min_evals, min_logs = spec.table("seed"), int(spec.table("min_evals")), int(spec.table("min_log_points"))
    total, how = scale_rules.optimizer_steps_of(ctx, n)
    asked = "--samples" if ctx.options.samples else "--dataset-dir" if ctx.options.dataset_dir else None
    evaluates = ctx.get("eval_strategy", "no") == "steps" and (ctx.get("val_size") or ctx.get("eval_dataset"))
    eval_steps = int(seed["eval_steps"])
    if evaluates:
        eval_steps, why = scale_rules.evaluations(ctx, total, how, eval_steps)
        _choose(ctx, "eval_steps", eval_steps, why, asked, "R-EVAL-SIZE" if eval_steps > seed["eval_steps"] else None)
    if evaluates and total // int(ctx.get("eval_steps", eval_steps)) < min_evals <= total:
        ctx.warn("R-DATA-STEPS", f"eval_steps {ctx.get('eval_steps')} evaluates {total // int(ctx.get('eval_steps'))} "
                                 f"time(s) in {total:,} optimizer steps; {total // min_evals} would evaluate "
                                 f"{min_evals} times")
    save = int(seed["save_steps"])
    most_saves = int(rules.rule("R-DATA-LARGE").table("max_saves"))
    save_rule = None
    if evaluates and (total - 1) // save > most_saves:
        save, save_rule = int(ctx.get("eval_steps", eval_steps)), "R-DATA-LARGE"
        why = (f"{total:,} optimizer steps: the seed's {seed['save_steps']} would save {(total - 1) // seed['save_steps']:,} "
               f"times; saving at each evaluation (every {save:,} steps) keeps {(total - 1) // save} checkpoints")
    elif total > save:
        why = f"{total:,} optimizer steps: the seed's {save} saves {(total - 1) // save} time(s) before the end"
    else:
        step = int(ctx.get("eval_steps", eval_steps)) if evaluates else max(1, total // min_evals)
        aligned = (total // 2) // step >= 1
        save = step * ((total // 2) // step) if aligned else max(1, total // 2)
        why = (f"{total:,} optimizer steps: every {save} steps ({'a multiple of eval_steps, ' if aligned else ''}"
               f"about half the run) saves {(total - 1) // save} time(s) before the end (the seed's "
               f"{seed['save_steps']} would save only the final model)")
        if save >= total:
            ctx.warn("R-DATA-STEPS", f"the run is only {total} optimizer step(s); it cannot save before its end")
    _choose(ctx, "save_steps", save, why, asked, save_rule)
    log = int(seed["logging_steps"])
    if total < min_logs * log:
        log = max(1, total // min_logs)
        why = (f"{total:,} // {min_logs} = every {log} step(s) logs {total // log} points (the diagnosis judges a "
               f"trend from 8; the seed's {seed['logging_steps']} would log {total // int(seed['logging_steps'])})")
    else:
        why = f"{total:,} optimizer steps: the seed's {log} logs {total // log:,} points"
    _choose(ctx, "logging_steps", log, why, asked)
    if total < min_evals:
        ctx.warn("R-DATA-STEPS", f"{how}: too short to evaluate {min_evals} times; more data, epochs or a smaller "
                                 "batch make a run the eval loss can judge")
    scale_rules.cap_warmup(ctx, total)
    _warmup_arithmetic(ctx, total)


def _choose(ctx: Context, key: str, value: int, why: str, asked: str | None, rule_id: str | None = None) -> None:
    """R-DATA-STEPS' value (or *rule_id*'s); where the seed's value stays, its decision keeps its rule and gains the
    arithmetic."""
    decision = ctx.decisions.get(key)
    if decision is not None and decision.rule != "R-DATA-STEPS" and decision.value == value \
            and key in ctx.config and key not in ctx.fixed:
        ctx.decisions[key] = dataclasses.replace(decision, reason=f"{decision.reason}; R-DATA-STEPS: {why}")
        return
    ctx.choose(key, value, rule_id or "R-DATA-STEPS", why, asked=asked)


def _warmup_arithmetic(ctx: Context, total: int) -> None:
    """Add the warmup's steps to R-DATA-WARMUP's reason (the Trainer takes ceil(ratio x steps))."""
    decision = ctx.decisions.get("warmup_ratio")
    ratio = ctx.get("warmup_ratio")
    if decision is None or not isinstance(ratio, (int, float)) or ctx.get("warmup_steps"):
        return
    steps = math.ceil(ratio * total)
    ctx.decisions["warmup_ratio"] = dataclasses.replace(
        decision, reason=f"{decision.reason}; {ratio:g} x {total:,} optimizer steps = {steps} warmup step(s)")
