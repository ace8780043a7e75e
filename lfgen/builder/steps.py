"""The rule pipeline: one function per step, run in the order of ``STEPS``.

Each step reads the context and calls ``ctx.choose(key, value, rule_id, reason)`` or ``ctx.warn``;
``build`` runs them and returns the ``Build``. Where a step's number comes from the rule registry
(presets/rules.yaml), it is read there, never written again here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from lfgen.builder import datasets, fit_rules, scale_rules
from lfgen.builder.checks import checks
from lfgen.builder.context import Build, Context, Decision, same
from lfgen.builder.options import BuildOptions
from lfgen.builder.data_rules import data_cutoff, intervals
from lfgen.builder.multi_gpu import tokenized
from lfgen.builder.scale_rules import eval_size
from lfgen.builder.template_rules import template
from lfgen.builder.shape_rules import data_fit, learning_rate, shape, unread_keys
from lfgen.builder.sizing import estimate_memory, hardware, quantization, user_precision
from lfgen.builder.targets import resolve_target
from lfgen.builder.vlm_rules import both_towers, vision_keys
from lfgen.catalogs import rules
from lfgen.catalogs.presets import Preset, get_preset, training_block
from lfgen.errors import InputError, ProblemsFound

def is_lora(ctx: Context) -> bool:
    return ctx.get("finetuning_type", "lora") == "lora"


def _premise_holds(ctx: Context, key: str, rule_id: str, value: Any, block: dict[str, Any]) -> bool:
    """For a base file: does the skeleton's rule apply to this file at all?"""
    if not ctx.shape.applies(rule_id):
        return False  # the rule's premise does not hold for this shape (explain lists it once)
    pair = ("per_device_train_batch_size", "gradient_accumulation_steps")
    if key in pair:  # "4 x 8 = 32" holds only when the file has both numbers
        return all(same(ctx.get(k), block[k].value) for k in pair)
    if key not in ctx.fixed:
        from lfgen.catalogs.llamafactory import snapshot

        spec = snapshot().keys.get(key)
        if spec is not None and same(spec.default, value):
            return False  # LlamaFactory does it already: nothing to suggest
    return True


def _skeleton(ctx: Context) -> None:
    block = training_block()
    choices = {**block.values, **block.defaults}
    for key, choice in choices.items():
        if key in ctx.replaced:
            continue  # the shape decides it (shape_rules)
        if ctx.from_file_only and not _premise_holds(ctx, key, choice.rule, choice.value, choices):
            continue
        ctx.choose(key, choice.value, choice.rule, choice.reason)


def _lora(ctx: Context) -> None:
    preset = ctx.preset
    if preset is None:
        return
    source = f"preset {preset.name}: {preset.source}"
    if is_lora(ctx):
        ctx.choose("lora_rank", preset.lora.rank, "PRESET", f"the {preset.name} preset's rank", source=source)
    if ctx.shape.reads("lora_target"):  # LoRA, and OFT (which adapts lora_target in LlamaFactory 0.9.5)
        target, how, notes = resolve_target(preset.lora.target, lambda: ctx.model_name)
        target, towers = both_towers(ctx, preset.lora.target, target)
        ctx.choose("lora_target", target, "R-TARGET", f"the {preset.name} preset targets {how}{towers}",
                   source=source)
        if "lora_target" not in ctx.fixed:  # --target or the file replaced the preset's set: its notes do not apply
            for note in notes:
                ctx.warn("R-TARGET", note)
    if not is_lora(ctx):
        return  # the rest of the block is LoRA's own (R-METHOD-KEYS)
    banded = "lora_dropout" not in preset.pinned and ctx.shape.applies("R-DATA-DROPOUT")
    ctx.choose("lora_dropout", preset.lora.dropout, "R-DATA-DROPOUT" if banded else "PRESET",
               f"the {preset.name} preset's dropout" + (" (data size not known)" if banded else ""),
               alternative=_dropout_alternative(), source=source)
    for key, value in preset.unsupported.items():
        ctx.warn("R-BIAS", f"the {preset.name} preset's seed asks for {key} {value}; LlamaFactory has no LoRA "
                           f"{key} option (its LoraConfig uses bias none), so nothing is written for it")


def _dropout_alternative() -> str:
    alt = rules.rule("R-DATA-DROPOUT").table("alternative")
    return f"lora_dropout {alt['value']} ({alt['source']}); pass --dropout {alt['value']}"


def _user_target(ctx: Context) -> None:
    """--target takes the abstract sets too; store the resolved names as the user's value."""
    if ctx.options.target is not None:
        target, how, notes = resolve_target(ctx.options.target, lambda: ctx.model_name)
        target, towers = both_towers(ctx, ctx.options.target, target)
        ctx.fixed["lora_target"] = (target, "USER", f"you set it (--target {ctx.options.target}: {how}{towers})")
        for note in notes:
            ctx.warn("R-TARGET", note)


def _check_registered(ctx: Context) -> None:
    """With --samples: the datasets the user named (--dataset, --dataset-dir) must be registered."""
    if ctx.options.dataset is None and ctx.options.dataset_dir is None:
        return
    dataset_dir = ctx.get("dataset_dir", "data")
    names, info = datasets.split_names(ctx.get("dataset")), datasets.load_info(dataset_dir)
    problems = datasets.unregistered(names, info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    data_fit(ctx, names, info, dataset_dir)


def _data_size(ctx: Context) -> None:
    """How many training rows: --samples, else counted from dataset_info.json."""
    if ctx.options.samples is not None:
        ctx.samples, ctx.samples_note = ctx.options.samples, "you set it (--samples)"
        _check_registered(ctx)  # --samples replaces counting, not the check that the named data exists
        return
    names = datasets.split_names(ctx.get("dataset"))
    dataset_dir = ctx.get("dataset_dir", "data")
    explicit_dir = ctx.options.dataset_dir is not None
    info_path = Path(dataset_dir) / datasets.INFO_FILE
    if not explicit_dir and not info_path.is_file():
        sized = ("rank, dropout, epochs and warmup" if ctx.shape.applies("R-DATA-RANK")
                 else "warmup, weight decay and the eval and save intervals")
        ctx.warn(_size_rule(ctx), f"no {info_path} here, so the data size is unknown; pass --samples N or "
                          f"--dataset-dir DIR to size {sized} for your data")
        return
    try:
        info = datasets.load_info(dataset_dir)
        problems = datasets.unregistered(names, info, dataset_dir)
        if problems:
            raise InputError(problems[0])
        data_fit(ctx, names, info, dataset_dir)
        max_samples = ctx.get("max_samples")
        sizes = [datasets.count_rows(n, info[n], dataset_dir, max_samples) for n in names]
    except InputError as exc:
        if explicit_dir or ctx.options.dataset is not None:  # the user named the data: a wrong name is an error
            raise
        ctx.warn(_size_rule(ctx), f"the data size is unknown: {exc}")
        return
    unknown = [s.note for s in sizes if s.rows is None]
    if unknown:
        ctx.warn(_size_rule(ctx), "; ".join(unknown))
        return
    ctx.samples = sum(s.rows for s in sizes if s.rows is not None)
    ctx.samples_note = "counted: " + "; ".join(s.note for s in sizes)


def _size_rule(ctx: Context) -> str:
    """The rule a missing data size leaves unapplied: the rank band for LoRA SFT, the intervals otherwise."""
    return "R-DATA-RANK" if ctx.shape.applies("R-DATA-RANK") else "R-DATA-STEPS"


def _data_rules(ctx: Context) -> None:
    n = ctx.samples
    if n is None:
        return
    count = f"N = {n:,} samples"
    asked = "--samples" if ctx.options.samples else "--dataset-dir" if ctx.options.dataset_dir else None
    if is_lora(ctx) and ctx.shape.applies("R-DATA-RANK"):
        _lora_data_rules(ctx, n, count, asked)
    _epoch_rules(ctx, n, count, asked)


def _lora_data_rules(ctx: Context, n: int, count: str, asked: str | None) -> None:
    """R-DATA-RANK and R-DATA-DROPOUT: LoRA's rank and dropout for the data size."""
    preset = ctx.preset
    pinned = set(preset.pinned) if preset else {"lora_rank", "lora_alpha", "lora_target", "lora_dropout"}
    rank_band = rules.band("R-DATA-RANK", n)
    low, high = rank_band["range"]
    if preset is not None and "lora_rank" not in pinned:
        ctx.choose("lora_rank", rank_band["value"], "R-DATA-RANK",
                   f"{count}: seed 002's band is rank {low}-{high}; lfgen takes the top",
                   alternative=rules.rule("R-DATA-RANK").table("alternative"))
    small = rules.rule("R-DATA-RANK").table("small_data")
    rank = ctx.get("lora_rank")
    if isinstance(rank, int) and not low <= rank <= high:
        ctx.warn("R-DATA-RANK", f"rank {rank} is outside seed 002's band {low}-{high} for {count} "
                                f"({'risk of overfitting' if rank > high else 'may underfit'}); your call")
    if isinstance(rank, int) and n <= small["upto"] and rank > small["max_rank"]:
        ctx.warn("R-DATA-RANK", f"rank {rank} with under 1,000 samples: seed 003 says never above "
                                f"{small['max_rank']} (overfitting)")
    dropout = rules.band("R-DATA-DROPOUT", n)["value"]
    if "lora_dropout" in pinned:
        if not same(ctx.get("lora_dropout"), dropout):
            kept = ctx.get("lora_dropout")
            has = f"dropout {kept}" if kept is not None else "LlamaFactory's default dropout 0"
            whose = f"the {preset.name} preset keeps" if preset else f"{ctx.base} has"
            ctx.warn("R-DATA-DROPOUT", f"{whose} {has}; "
                                       f"seed 002's band for {count} is {dropout}")
    else:
        ctx.choose("lora_dropout", dropout, "R-DATA-DROPOUT", f"{count}: seed 002's band gives {dropout}",
                   alternative=_dropout_alternative(), asked=asked)


def _epoch_rules(ctx: Context, n: int, count: str, asked: str | None) -> None:
    if scale_rules.epochs_and_warmup(ctx, n, count, asked):
        decay = rules.band("R-DATA-WD", n)["value"]
        ctx.choose("weight_decay", decay, "R-DATA-WD", f"{count}: weight decay {decay}", asked=asked)
        return
    epochs = rules.band("R-DATA-EPOCHS", n)
    if ctx.shape.applies("R-DATA-EPOCHS"):
        ctx.choose("num_train_epochs", epochs["value"], "R-DATA-EPOCHS",
                   f"{count}: seed 002's band is {epochs['range'][0]}-{epochs['range'][1]} epochs; lfgen takes the "
                   "low end (stop when eval loss stops falling)", asked=asked)
    warmup = rules.band("R-DATA-WARMUP", n)["value"]
    ctx.choose("warmup_ratio", warmup, "R-DATA-WARMUP", f"{count}: warmup {warmup} for this data size", asked=asked)
    decay = rules.band("R-DATA-WD", n)["value"]
    ctx.choose("weight_decay", decay, "R-DATA-WD", f"{count}: weight decay {decay}", asked=asked)


def _alpha(ctx: Context) -> None:
    """R-ALPHA: alpha keeps the base's alpha/rank ratio (the preset's, or the file's), 2 by default."""
    rank = ctx.get("lora_rank")
    if not isinstance(rank, int) or not is_lora(ctx):
        return
    if ctx.preset is not None:
        ratio, whose = ctx.preset.lora.alpha_ratio, f"the {ctx.preset.name} preset's ratio"
    else:
        file_rank = ctx.fixed.get("lora_rank", (None, "FILE"))
        file_alpha = ctx.fixed.get("lora_alpha", (None, "FILE"))
        if file_rank[1] == "FILE" and isinstance(file_rank[0], int) and isinstance(file_alpha[0], int):
            ratio, whose = file_alpha[0] / file_rank[0], "the file's ratio"
        else:
            ratio, whose = 2.0, "the default ratio"
    if ctx.from_file_only and "lora_alpha" not in ctx.fixed and round(ratio * rank) == 2 * rank:
        return  # LlamaFactory's own default is alpha = 2 x rank: nothing to suggest
    ctx.choose("lora_alpha", round(ratio * rank), "R-ALPHA", f"alpha = {ratio:g} x rank {rank} ({whose})",
               asked="--rank" if ctx.options.rank is not None and ctx.options.alpha is None else None)


def _output(ctx: Context) -> None:
    model_name = Path(str(ctx.get("model_name_or_path", "model")).rstrip("/")).name.lower()
    tag = ctx.preset.name if ctx.preset else Path(ctx.base).stem
    found = ctx.shape
    parts = [tag, *([found.method_name] if found.method_name != "lora" else []),
             *([found.stage_name] if found.stage_name != "sft" else []),
             *([f"r{ctx.get('lora_rank', 8)}"] if is_lora(ctx) else [])]
    output_dir = f"outputs/{model_name}-{'-'.join(parts)}"
    ctx.choose("output_dir", output_dir, "LF-DEFAULT", "a fresh folder per run (LlamaFactory resumes or refuses "
                                                       "in a used one)")
    micro = ctx.get("per_device_train_batch_size")
    if micro is not None:
        ctx.choose("per_device_eval_batch_size", micro, "R-HW-BATCH",
                   "evaluate with the training micro-batch (the default 8 can run out of memory)")


def _output_digest(ctx: Context) -> None:
    """The default output_dir ends with a short hash of the finished config (all but output_dir), so two
    configs that differ never share a folder; a value the user or a base file gave is kept as it is."""
    decision = ctx.decisions.get("output_dir")
    if decision is None or decision.rule != "LF-DEFAULT" or "output_dir" in ctx.fixed or "output_dir" not in ctx.config:
        return
    value = f"{ctx.config['output_dir']}-{config_digest(ctx.config)}"
    ctx.config["output_dir"] = value
    ctx.decisions["output_dir"] = replace(decision, value=value, reason=f"{decision.reason}; the suffix is a hash "
                                          "of the config's other keys, so other settings get another folder")


def config_digest(config: dict[str, Any]) -> str:
    """Six hex digits that change whenever any key but output_dir changes (the same config, the same digest)."""
    import hashlib
    import json

    content = {key: value for key, value in config.items() if key != "output_dir"}
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def _user_rest(ctx: Context) -> None:
    """Every fixed key no rule touched: the user's --set keys and the rest of a base file."""
    for key, (value, rule_id, where) in ctx.fixed.items():
        if key not in ctx.decisions:
            ctx.config[key] = value
            source = where if rule_id == "USER" else ctx.file_source or "" if rule_id == "FILE" else \
                rules.rule(rule_id).source
            ctx.decisions[key] = Decision(key=key, value=value, rule=rule_id, reason=where, source=source)


# The pipeline, in order: the user's fixed values first, then each rule's step; later steps read what
# earlier ones chose (alpha reads the rank, the batch reads the precision, output_dir the rank).
STEPS: tuple[Callable[[Context], None], ...] = (
    # the template before R-DATA-CUTOFF: the data's lengths are measured through it (its system prompt counts)
    shape, user_precision, _skeleton, _user_target, _data_size, template, data_cutoff, _lora, _data_rules, _alpha,
    learning_rate, vision_keys, hardware, quantization, eval_size, intervals, _output, _user_rest, unread_keys,
    tokenized, _output_digest, checks)


def is_file_base(base: str) -> bool:
    return base.endswith((".yaml", ".yml", ".json")) or Path(base).is_file()


def _load_base(path: str) -> dict[str, Any]:
    """A base config's values, its relative paths rebased from the root it was made in (its
    ``lfgen-root:`` line) onto the working directory, where the new config is made."""
    from lfgen.paths import config_root, rebase
    from lfgen.yamlio import parse_config, read_text

    text = read_text(path, "config file")
    values = parse_config(text, path)
    root = config_root(path, text)
    return values if root is None else rebase(values, root, Path.cwd())


def build(base: str = "a800", options: BuildOptions | None = None, *, check_data: bool = True,
          check_schema: bool = True, lengths: Any = None) -> Build:
    """Build one LlamaFactory train config from a preset name or a config file, plus options
    (*check_schema* False: explain reports the schema's problems itself instead of stopping on them;
    *check_data* False with *lengths*: the data's lengths as a recipe recorded them, nothing is read).

    A preset that steps down (auto) and does not fit its GPU is built again with R-HW-FIT's next step, until it fits
    or no step is left (lfgen.builder.fit_rules)."""
    options = options or BuildOptions()
    preset: Preset | None = None
    file_values: dict[str, Any] = {}
    file_source = None
    if is_file_base(base):
        file_values, file_source = _load_base(base), base
    else:
        preset = get_preset(base)
    taken: list[fit_rules.Taken] = []
    stepping = preset is not None and preset.steps_down
    while True:
        ctx = Context(base, options, preset, file_values, file_source)
        for step in taken:  # in order: a later step on the same key (rank 64 -> 32) replaces the earlier one
            if ctx.fixed.get(step.key, (None, "R-HW-FIT"))[1] == "R-HW-FIT":
                ctx.fixed[step.key] = (step.value, "R-HW-FIT", step.reason)
        if not check_data and options.samples is not None:
            ctx.samples, ctx.samples_note = options.samples, "as recorded when the file was written"
        ctx.read_data, ctx.lengths = check_data, None if check_data else lengths
        for step in STEPS:
            if check_data or step is not _data_size:
                step(ctx)
        following = fit_rules.next_step(ctx, taken) if stepping else None
        if following is None:
            if taken and ctx.fit is not None and not ctx.fit.fits:
                taken, stepping = [], False  # no step reaches a fit: the config as it was, with its fixes named
                continue
            break
        taken.append(following)
    ctx.fit_steps = taken
    if ctx.model_spec is not None and ctx.hardware is not None and not ctx.no_estimate:
        estimate_memory(ctx)
    # Rule values are tested against LlamaFactory's parser; only raw values from --set or a base
    # file need lfgen's schema (skipping it keeps `lfgen preset` inside its startup budget).
    if check_schema and (options.set or file_values):
        from lfgen.catalogs.llamafactory import snapshot
        from lfgen.builder.schema import check

        problems = check(ctx.config, snapshot())
        if problems:
            raise ProblemsFound(problems)
    if ctx.detected is not None and ctx.detected.name is not None:  # the recipe names the hardware it was sized for
        options = options.model_copy(update={"gpu": ctx.detected.name})
    return Build(base=base, options=options, config=ctx.config, decisions=ctx.decisions, warnings=ctx.warnings,
                 samples=ctx.samples, samples_note=ctx.samples_note, hardware=ctx.hardware, estimate=ctx.estimate,
                 preset=preset, not_applied=ctx.not_applied, lengths=ctx.lengths, seq_len=ctx.seq_len,
                 headroom=ctx.headroom if ctx.hardware is not None else None, shape=ctx.shape, fit=ctx.fit,
                 files=dict(ctx.files), fit_steps=list(taken), cpu=ctx.cpu)
