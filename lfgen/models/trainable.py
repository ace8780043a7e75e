"""Trainable parameters of full, freeze and OFT fine-tuning, as LlamaFactory 0.9.5's ``init_adapter`` sets them.

* full (``_setup_full_tuning``): every parameter of the model (a text model has no forbidden modules);
* freeze (``_setup_freeze_tuning``): in the layers ``freeze_trainable_layers`` picks (the last n, the first
  -n, or with ``use_llama_pro`` every stride-th layer), the parameters whose name holds
  ``.{layer}.{module}`` for each of ``freeze_trainable_modules`` (``all``: the whole layer), plus every
  parameter whose name holds one of ``freeze_extra_modules``;
* OFT (``_setup_lora_tuning`` with PEFT's OFTConfig): on each adapted Linear, ``r`` blocks of
  ``b (b - 1) / 2`` parameters (a skew-symmetric b x b block each), with ``b = oft_block_size`` and
  ``r = in_features / b`` (or ``b = in_features / oft_rank``), PEFT's divisor adjustment included.
  LlamaFactory 0.9.5 adapts ``lora_target`` for OFT; ``oft_target`` is parsed but never read.

LoRA is ``lfgen.models.params``. Each count comes back as a ``LoraCount`` (rank 0 for full and freeze), so
the memory model reads one shape.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

from lfgen.errors import InputError
from lfgen.models.catalog import ModelSpec, load_model
from lfgen.models.modules import Inventory, inventory, resolve_targets
from lfgen.models.shared import oft_params, trainable_layer_ids
from lfgen.models.params import Adapted, LoraCount

_LAYER = re.compile(r"\.(\d+)\.([^.]+)")


def _split(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def full_count(model: ModelSpec | str) -> LoraCount:
    """Full fine-tuning trains every parameter."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    inv = inventory(spec)
    notes = ("multimodal checkpoint: the count covers the text model",) if spec.multimodal else ()
    return LoraCount(model=spec.name, rank=0, targets=(), adapted=(), lora_params=inv.total_params,
                     modules_to_save_params=0, total_params=inv.total_params, notes=notes)


def _tied_head(inv: Inventory, name: str) -> bool:
    return inv.tied_params > 0 and name == "lm_head"


def freeze_count(model: ModelSpec | str, trainable_layers: int = 2, modules: str | Sequence[str] = "all",
                 extra_modules: str | Sequence[str] | None = None, use_llama_pro: bool = False) -> LoraCount:
    """Freeze tuning's trainable parameters (see the module docstring)."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    inv = inventory(spec)
    layers = spec.num_hidden_layers
    ids = trainable_layer_ids(layers, trainable_layers, use_llama_pro)
    wanted, extra = _split(modules) or ["all"], _split(extra_modules)
    hidden = sorted({m.group(2) for g in inv.groups if (m := _LAYER.search(g.path + "."))})
    outside = sorted({g.path.split(".")[-1] for g in inv.groups if not _LAYER.search(g.path + ".")})
    for name in wanted:
        if name != "all" and name not in hidden:
            raise InputError(f"freeze_trainable_modules: {name!r} is not a module of {spec.name}'s layers; "
                             f"choose from {', '.join(hidden)}")
    for name in extra:
        if name not in outside:
            raise InputError(f"freeze_extra_modules: {name!r} is not a module outside {spec.name}'s layers; "
                             f"choose from {', '.join(outside)}")
    notes: list[str] = []
    total = 0
    for g in inv.groups:
        params = g.count * g.params_each
        if _tied_head(inv, g.name):
            continue  # the tied output head is the embedding's weight, counted there
        if any(name in g.path for name in extra):
            total += params
            continue
        found = _LAYER.search(g.path + ".")
        if found is None or not ("all" in wanted or found.group(2) in wanted):
            continue
        if g.count % layers:
            notes.append(f"{g.name}: {g.count} modules over {layers} layers; lfgen spreads them evenly")
        total += round(params * len(ids) / layers)
    if spec.multimodal:
        notes.append("multimodal checkpoint: the count covers the text model (LlamaFactory also trains the "
                     "projector when freeze_multi_modal_projector is false; it is true by default)")
    return LoraCount(model=spec.name, rank=0, targets=tuple(wanted), adapted=(), lora_params=total,
                     modules_to_save_params=0, total_params=inv.total_params, notes=tuple(notes))


def oft_count(model: ModelSpec | str, target: str | Sequence[str] = "all", oft_rank: int = 0,
              oft_block_size: int = 32) -> LoraCount:
    """OFT's trainable parameters on *target* (LlamaFactory's lora_target), as PEFT's OFT layers hold them."""
    if (oft_rank == 0) == (oft_block_size == 0):
        raise InputError(f"oft_rank, oft_block_size: PEFT's OFT needs exactly one of them non-zero "
                         f"(got {oft_rank} and {oft_block_size})")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    inv = inventory(spec)
    resolved = resolve_targets(inv, target)
    adapted = []
    for name in resolved.names:
        for g in inv.named(name):
            if g.kind != "linear":
                continue
            per = oft_params(g.in_features, oft_rank, oft_block_size)
            adapted.append(Adapted(g.name, g.count, g.in_features, g.out_features, per * g.count))
    return LoraCount(model=spec.name, rank=0, targets=resolved.names, adapted=tuple(adapted),
                     lora_params=sum(a.params for a in adapted), modules_to_save_params=0,
                     total_params=inv.total_params, notes=tuple(resolved.notes))


def count_trainable(model: ModelSpec | str, finetuning_type: str = "lora", **settings) -> LoraCount:
    """The trainable count of any finetuning type; *settings* are LlamaFactory's keys of that type. A
    vision-language model is counted per tower (``lfgen.models.towers``, with its freeze_* keys) when
    transformers can build its skeleton, else its text model."""
    from lfgen.models.params import count_lora_params

    spec = model if isinstance(model, ModelSpec) else load_model(model)
    if spec.composite and importlib.util.find_spec("transformers") is not None:
        from lfgen.models.towers import lora_count  # every tower, as LlamaFactory resolves the freeze keys

        return lora_count(spec, finetuning_type=finetuning_type, **settings)
    model = spec
    get = settings.get
    if finetuning_type == "full":
        return full_count(model)
    if finetuning_type == "freeze":
        return freeze_count(model, get("freeze_trainable_layers", 2), get("freeze_trainable_modules", "all"),
                            get("freeze_extra_modules"), bool(get("use_llama_pro", False)))
    if finetuning_type == "oft":
        return oft_count(model, get("lora_target", "all"), get("oft_rank", 0), get("oft_block_size", 32))
    if finetuning_type != "lora":
        raise InputError(f"finetuning_type: must be lora, oft, freeze or full (got {finetuning_type!r})")
    return count_lora_params(model, get("lora_rank", 8), get("lora_target", "all"),
                             additional_target=get("additional_target"), use_dora=bool(get("use_dora", False)))
