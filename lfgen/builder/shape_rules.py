"""The build steps of the run's shape (lfgen.builder.shapes): which stage and method it trains, the keys they write,
the learning rate (R-LR-RANK/R-LR-SIZE, R-METHOD-LR, R-STAGE-LR), the data it needs (R-STAGE-DATA) and the keys
nothing reads (R-METHOD-KEYS).

``shape`` runs first: it resolves the shape from --stage/--method and the user's or the file's keys, and refuses
options the shape cannot use before anything is chosen. ``learning_rate`` runs once rank and alpha are known;
``unread_keys`` runs last, on the finished config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.builder import data_kinds, datasets, shapes
from lfgen.builder.context import Context, choose_key
from lfgen.catalogs import rules
from lfgen.errors import InputError

# The options that set a key only one method reads.
_METHOD_OPTIONS = {"rank": "lora_rank", "alpha": "lora_alpha", "dropout": "lora_dropout", "target": "lora_target"}


def _fixed(ctx: Context, key: str) -> Any:
    return ctx.fixed[key][0] if key in ctx.fixed else None


def _from_options(ctx: Context) -> shapes.Shape:
    """The shape --stage asks for (an lfgen stage: orpo and simpo are LlamaFactory's stage dpo with that pref_loss),
    checked against the stage and pref_loss the user set or the file has; else the shape of those keys."""
    method = _fixed(ctx, "finetuning_type")
    name = ctx.options.stage
    if name is None:
        return shapes.resolve(_fixed(ctx, "stage"), method, _fixed(ctx, "pref_loss"))
    stage = shapes.registry().stages[name]
    for key, allowed in (("stage", (stage.stage,)), ("pref_loss", stage.losses)):
        given = ctx.fixed.get(key)
        if given is not None and allowed and given[0] not in allowed:
            owner = shapes.resolve(stage.stage, None, given[0]).stage_name if key == "pref_loss" else None
            hint = f" (pref_loss {given[0]} is --stage {owner})" if owner not in (None, name) else ""
            raise InputError(f"--stage {name}: conflicts with {key} {given[0]!r} ({given[2]}); give one of "
                             f"them{hint}")
    how = f"you set it (--stage {name})" if name == stage.stage else (
        f"you set it (--stage {name}: LlamaFactory trains {stage.label} as stage {stage.stage} with pref_loss "
        f"{stage.pref_loss})")
    if name != "sft":  # --stage sft leaves the skeleton's own decision (LF-SKELETON)
        ctx.fixed.setdefault("stage", (stage.stage, "USER", how))
    if name != stage.stage:
        ctx.fixed.setdefault("pref_loss", (stage.pref_loss, "USER", how))
    return shapes.Shape(name, method if method in shapes.method_names() else "lora")


def shape(ctx: Context) -> None:
    """Resolve the shape and check that the preset and the options fit it; the keys that only the shape decides
    (learning rate, and stage, method, dataset and epochs where they are not LoRA SFT's) leave the skeleton."""
    from dataclasses import replace

    from lfgen.builder import vlm_rules

    found = _from_options(ctx)
    vision = ctx.preset.vision if ctx.preset is not None else None
    model = _fixed(ctx, "model_name_or_path") or (vision.model if vision is not None and vision.model else None)
    found = ctx.shape = replace(found, modality_name=shapes.modality_of(str(model or "")))
    vlm_rules.preset_model(ctx)
    if not found.stage.buildable and not ctx.from_file_only:
        raise InputError(f"stage: lfgen does not build {found.stage.label} configs (a reward model and generation "
                         "settings lfgen has no rules for); lfgen explain and validate read them")
    preset = ctx.preset
    if preset is not None and found.method_name not in shapes.serves(preset.pinned):
        pinned = ", ".join(preset.pinned)
        raise InputError(f"preset: {preset.name} pins {pinned}, which {found.method.label} fine-tuning does not read; "
                         f"use `lfgen preset auto --method {found.method_name}` (auto serves every method; "
                         "`lfgen presets` lists what each preset serves)")
    for option, key in _METHOD_OPTIONS.items():
        if getattr(ctx.options, option) is not None and not found.reads(key):
            raise InputError(f"--{option}: {found.method.label} fine-tuning does not read {key}; drop --{option} "
                             f"or train with --method {' or --method '.join(found.readers_of(key))}")
    replaced = ctx.replaced | {"learning_rate"}
    if found.stage_name != "sft":
        replaced |= {"stage", "dataset"}
    if found.dataset != found.stage.dataset:  # a vision-language run's demo set (mllm_demo)
        replaced.add("dataset")
    if found.method_name != "lora":
        replaced.add("finetuning_type")
    if found.stage.epochs:
        replaced.add("num_train_epochs")
    ctx.replaced = replaced
    _stage_keys(ctx, found)
    _method_keys(ctx, found)


def _stage_keys(ctx: Context, found: shapes.Shape) -> None:
    stage = found.stage
    if (found.stage_name != "sft" or found.dataset != stage.dataset) and "dataset" not in ctx.fixed:
        ctx.choose("dataset", found.dataset, "LF-DEFAULT", f"LlamaFactory's demo set of {data_kinds.KINDS.get(stage.data, stage.data)} "
                                                           f"for {found.label}; pass --dataset")
    if stage.pref_loss is not None and "pref_loss" not in ctx.fixed:
        choose_key(ctx, "pref_loss", stage.pref_loss, "R-STAGE-BETA", f"{stage.pref_loss}: {stage.label}'s loss "
                                                                       "(LlamaFactory's DPO example writes it)")
    beta = found.beta()
    if beta is not None:
        low, high = beta["range"]
        choose_key(ctx, "pref_beta", beta["value"], "R-STAGE-BETA",
                    f"{stage.label}'s beta {beta['value']:g} (a sweep spans {low:g}-{high:g}, log-spaced)")
    if "simpo_gamma" in stage.writes:
        gamma = rules.rule("R-STAGE-BETA").table("simpo_gamma")
        choose_key(ctx, "simpo_gamma", gamma, "R-STAGE-BETA", f"SimPO's target margin: beta 2.5 x 0.55 = {gamma:g} "
                                                               "(princeton-nlp/SimPO, Llama-3-8B-Instruct)")
    if stage.epochs:
        epochs = rules.rule("R-STAGE-DATA").table("epochs")
        choose_key(ctx, "num_train_epochs", epochs, "R-STAGE-DATA", f"{stage.label}: {epochs:g} epochs, as LlamaFactory's "
                                                                     "DPO and KTO examples; seed 002's data-size bands "
                                                                     "are for SFT data")


def _method_keys(ctx: Context, found: shapes.Shape) -> None:
    keys = rules.rule("R-METHOD-KEYS")
    for key in found.method.writes:
        choose_key(ctx, key, keys.table(key), "R-METHOD-KEYS",
                    f"{found.method.label}: LlamaFactory's default, written so the reader sees what trains")


def model_size(ctx: Context) -> tuple[float | None, str]:
    """The model's size in billions of parameters and how lfgen knows it: the catalog, a local config.json, or the
    model's name (Qwen2.5-7B); (None, why) otherwise. An unknown id does not trigger LF-MODEL's lookup warning."""
    from lfgen.builder.model import looks_local
    from lfgen.models.catalog import catalog_entry

    model = str(ctx.get("model_name_or_path", ""))
    entry = catalog_entry(model)
    if entry is not None:
        return float(entry["params_b"]), "lfgen's catalog"
    if looks_local(model) and _is_dir(model) and ctx.model_spec is not None:
        from lfgen.builder.model import inventory_of

        return round(inventory_of(model).total_params / 1e9, 3), "its config.json"
    named = shapes.size_in_name(model)
    if named is not None:
        return named, "from its name"
    return None, f"{model} is in no catalog and not on disk"


def _is_dir(path: str) -> bool:
    try:
        return Path(path).expanduser().is_dir()
    except OSError:  # too long, no permission: the model lookup reports it
        return False


def learning_rate(ctx: Context) -> None:
    """The shape's learning rate (R-LR-RANK x R-LR-SIZE for LoRA SFT and pt; R-METHOD-LR; R-STAGE-LR)."""
    found = ctx.shape
    rank = ctx.get("lora_rank", 8)
    alpha = ctx.get("lora_alpha")
    if not isinstance(alpha, int) or isinstance(alpha, bool) or alpha <= 0:
        alpha = 2 * rank if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0 else 16
    size = model_size(ctx) if found.lr_rule == "R-LR-RANK" else (None, "")
    rate = ctx.rate = found.learning_rate(alpha, size)
    if rate is not None:
        ctx.choose("learning_rate", rate.value, rate.rule, rate.reason, alternative=rate.alternative)


def data_fit(ctx: Context, names: list[str], info: dict[str, Any], dataset_dir: str) -> None:
    """R-STAGE-DATA: every named dataset fits the stage; the user's own --dataset is an error, a file's a warning."""
    found = ctx.shape
    for key in ("dataset", "eval_dataset"):
        for name in names if key == "dataset" else datasets.split_names(ctx.get("eval_dataset")):
            problem = data_kinds.fit_problem(name, info.get(name), found.stage_name, found.stage.data, dataset_dir,
                                             key) if name in info else None
            if problem is None:
                continue
            if ctx.options.dataset is not None or ctx.options.dataset_dir is not None or not ctx.from_file_only:
                raise InputError(problem)
            ctx.warn("R-STAGE-DATA", problem)


def unread_keys(ctx: Context) -> None:
    """R-METHOD-KEYS: a rule's key the shape does not read is dropped; the user's or the file's gets one warning."""
    found = ctx.shape
    for key in list(ctx.config):
        if found.reads(key) and key not in found.stage.drops:
            continue
        if key in ctx.fixed:
            if found.reads(key):
                continue  # the user's own template under pt: theirs to keep
            readers = found.readers_of(key)
            who = (f"read only by {', '.join(readers)}" if readers else
                   "LlamaFactory 0.9.5 parses it but never reads it (model/adapter.py adapts lora_target for OFT)")
            ctx.warn("R-METHOD-KEYS", f"{key}: {found.label} does not read it ({who}); LlamaFactory ignores it")
            continue
        del ctx.config[key]
        ctx.decisions.pop(key, None)
