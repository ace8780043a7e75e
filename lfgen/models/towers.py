"""Per-tower parameters of a vision-language model, and what each fine-tuning setting trains in each tower,
resolved the way LlamaFactory 0.9.5 resolves it.

The composite skeleton (vision tower, projector, language model) is built on the meta device from the
config (no weights, no download). Trainable parameters follow LlamaFactory's ``init_adapter``:

* LoRA/OFT (``_setup_lora_tuning``): ``lora_target: all`` is ``find_all_linear_modules`` (the last name of
  every Linear outside ``lm_head`` and the projector, and outside the vision tower while
  ``freeze_vision_tower``); any list then goes through ``patch_target_modules``: every module path that
  *contains* a target and none of the frozen towers' keys nor the ``lora_conflict`` keys. PEFT adapts
  those paths (a matched container is its "Target module ... is not supported" error) and trains a full
  copy of every module whose path ends with an ``additional_target`` (modules_to_save).
* full (``_setup_full_tuning``): every parameter outside the frozen towers (vision and projector frozen by
  default); freeze (``_setup_freeze_tuning``): the named layers' parameters, in any tower not frozen.

A test checks every count against LlamaFactory's own ``init_adapter`` on meta-device models.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lfgen.errors import InputError, did_you_mean
from lfgen.models import vlm
from lfgen.models.catalog import ModelSpec, load_model
from lfgen.models.params import Adapted, LoraCount
from lfgen.models.shared import oft_params, trainable_layer_ids
from lfgen.numbers import count_short

_LAYER = re.compile(r"\.\d+\.")
# LlamaFactory's keys that split a vision-language model into trained and frozen towers (finetuning_args).
FREEZE_KEYS = ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model")


@dataclass(frozen=True)
class Module:
    """One module of the skeleton: its path, what PEFT sees in it, and its parameters."""

    path: str
    cls: str
    kind: str  # linear | embedding | conv | other (PEFT's LoRA adapts the first three)
    in_features: int
    out_features: int
    params: int  # all parameters under it (a modules_to_save copy trains them all)


@dataclass(frozen=True)
class Skeleton:
    composite: vlm.Composite
    modules: tuple[Module, ...]
    parameters: tuple[tuple[str, int], ...]  # named_parameters(): tied weights once
    text_layers: int

    def tower_params(self) -> dict[str, int]:
        totals = dict.fromkeys(vlm.TOWERS, 0)
        for name, numel in self.parameters:
            totals[self.composite.tower_of(name)] += numel
        return totals


@dataclass(frozen=True)
class TowerCount:
    """What one fine-tuning setting trains in each tower of a vision-language model."""

    model: str
    model_type: str
    finetuning_type: str
    params: dict[str, int]  # every tower's parameters
    trainable: dict[str, int]
    targets: tuple[str, ...]  # LoRA/OFT: the module names adapted (last path component)
    adapted: int  # LoRA/OFT: how many modules
    notes: tuple[str, ...]
    language_modules: tuple[tuple[str, int, int, int, int], ...] = ()  # (name, in, out, count, params) adapted
    saved: int = 0  # parameters of the additional_target copies (PEFT modules_to_save)

    @property
    def total_trainable(self) -> int:
        return sum(self.trainable.values())

    def split(self) -> str:
        """Seed 000's way of saying it: ``Text: 786K, Vision: 1.18M`` (plus the projector)."""
        return (f"Text: {count_short(self.trainable['language'])}, Vision: {count_short(self.trainable['vision'])}, "
                f"Projector: {count_short(self.trainable['projector'])}")

    def line(self) -> str:
        """The sentence explain and validate show (R-VLM-FREEZE)."""
        return (f"trainable per tower as LlamaFactory resolves it ({self.finetuning_type}): {self.split()} "
                f"({self.total_trainable:,} in all; R-VLM-FREEZE)")

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "model_type": self.model_type, "finetuning_type": self.finetuning_type,
                "params": self.params, "trainable": self.trainable, "total_trainable": self.total_trainable,
                "targets": list(self.targets), "adapted_modules": self.adapted, "split": self.split(),
                "notes": list(self.notes)}


def _module(path: str, module: Any) -> Module:
    import torch

    numel = sum(p.numel() for p in module.parameters())
    if isinstance(module, torch.nn.Linear):
        return Module(path, type(module).__name__, "linear", module.in_features, module.out_features, numel)
    if isinstance(module, torch.nn.Embedding):
        return Module(path, type(module).__name__, "embedding", module.num_embeddings, module.embedding_dim, numel)
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return Module(path, type(module).__name__, "conv", module.in_channels, module.out_channels, numel)
    return Module(path, type(module).__name__, "other", 0, 0, numel)


@functools.cache
def skeleton(spec: ModelSpec) -> Skeleton:
    """The composite model of *spec* on the meta device, walked once per spec."""
    if not spec.composite:
        raise InputError(f"--model {spec.name}: not a vision-language model (model_type {spec.model_type!r})")
    try:
        from transformers import AutoConfig, AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise InputError(f"--model {spec.name}: per-tower counts build the {spec.composite} skeleton with "
                         "transformers, which is not installed; pip install 'lfgen[train]'") from None
    import torch

    whole = {k: v for k, v in json.loads(spec.composite_config).items() if k != "model_type"}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # config warnings (rope keys...) are noise here
    try:
        config = AutoConfig.for_model(spec.composite, **whole)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
    except Exception as exc:  # noqa: BLE001 -- transformers' reason, on one line
        raise InputError(f"--model {spec.name}: transformers cannot build this {spec.composite} model "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); check its config.json") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    composite = vlm.composite(spec.composite)
    assert composite is not None  # a composite spec always has a registered model_type
    modules = tuple(_module(path, m) for path, m in model.named_modules() if path)
    parameters = tuple((name, p.numel()) for name, p in model.named_parameters())
    return Skeleton(composite, modules, parameters, spec.num_hidden_layers)


def _split(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _frozen(c: vlm.Composite, freeze_vision: bool, freeze_projector: bool, freeze_language: bool) -> list[str]:
    """LlamaFactory's get_forbidden_modules."""
    return [*(c.vision if freeze_vision else ()), *(c.projector if freeze_projector else ()),
            *(c.language if freeze_language else ())]


def _all_linear(sk: Skeleton, freeze_vision: bool) -> list[str]:
    """find_all_linear_modules: last names of the Linear layers outside lm_head, the projector and (frozen)
    the vision tower; LlamaFactory tests the class name, as here."""
    forbidden = ["lm_head", *sk.composite.projector, *(sk.composite.vision if freeze_vision else ())]
    return sorted({m.path.rsplit(".", 1)[-1] for m in sk.modules
                   if "Linear" in m.cls and "Embedding" not in m.cls and not any(f in m.path for f in forbidden)})


def _lora_modules(sk: Skeleton, spec: ModelSpec, names: list[str], forbidden: list[str]) -> list[Module]:
    """patch_target_modules, then PEFT's check that each matched path is a layer LoRA can adapt."""
    hits = [m for m in sk.modules if any(t in m.path for t in names) and not any(f in m.path for f in forbidden)]
    for m in hits:
        if m.kind == "other":
            projector = vlm.family(spec.composite).projector if vlm.family(spec.composite) else "the projector"
            raise InputError(f"lora_target: '{next(t for t in names if t in m.path)}' matches {m.path}, a {m.cls} "
                             f"(a container, not a Linear layer): PEFT refuses it (\"Target module {m.cls}(...) is not "
                             f"supported\"); name its Linear layers, or train a whole projector with "
                             f"additional_target: {projector}")
        if m.kind == "conv":
            raise InputError(f"lora_target: {m.path} is a {m.cls}; lfgen counts LoRA on Linear and Embedding layers "
                             "only (LlamaFactory excludes the patch embeddings itself)")
    return hits


def _skipped_notes(sk: Skeleton, names: list[str], hits: list[Module], frozen: dict[str, bool]) -> list[str]:
    """Names that reach modules only in a frozen tower: LlamaFactory drops them without a word."""
    notes = []
    flag = {"vision": "freeze_vision_tower", "projector": "freeze_multi_modal_projector",
            "language": "freeze_language_model"}
    hit_paths = {m.path for m in hits}
    for tower, is_frozen in frozen.items():
        if not is_frozen:
            continue
        dropped = sorted({t for m in sk.modules if m.kind == "linear" and m.path not in hit_paths
                          and sk.composite.tower_of(m.path) == tower for t in names if t in m.path})
        if dropped:
            notes.append(f"lora_target: {', '.join(dropped)} also names Linear layers in the {tower} tower, which "
                         f"LlamaFactory skips silently while {flag[tower]} is true (R-VLM-FREEZE)")
    return notes


def _lora(sk: Skeleton, spec: ModelSpec, s: dict[str, Any]) -> tuple[dict[str, int], list[Module], list[str], int]:
    c, fv = sk.composite, s["freeze_vision_tower"]
    fp, fl = s["freeze_multi_modal_projector"], s["freeze_language_model"]
    requested = _split(s["lora_target"]) or ["all"]
    names = _all_linear(sk, fv) if requested == ["all"] else requested
    forbidden = [*_frozen(c, fv, fp, fl), *c.lora_conflict]
    hits = _lora_modules(sk, spec, names, forbidden)
    if not hits:
        linear = sorted({m.path.rsplit(".", 1)[-1] for m in sk.modules if m.kind == "linear"})
        raise InputError(f"lora_target: {','.join(requested)} matches no module LlamaFactory would adapt on "
                         f"{spec.name} with these freeze settings{did_you_mean(requested[0], linear)}; "
                         f"its Linear layers are {', '.join(linear)}")
    trainable = dict.fromkeys(vlm.TOWERS, 0)
    rank, dora, oft = s["lora_rank"], s["use_dora"], s["finetuning_type"] == "oft"
    for m in hits:
        if oft:
            per = oft_params(m.in_features, s["oft_rank"], s["oft_block_size"]) if m.kind == "linear" else 0
        else:
            per = rank * (m.in_features + m.out_features) + (m.out_features if dora else 0)
        trainable[c.tower_of(m.path)] += per
    notes = [] if requested == ["all"] else _skipped_notes(sk, names, hits, {"vision": fv, "projector": fp,
                                                                            "language": fl})
    saved = 0
    for key in _split(s["additional_target"]):  # PEFT modules_to_save: plain suffix match on the path
        copies = [m for m in sk.modules if m.path.endswith(key)]
        if not copies:
            raise InputError(f"additional_target: '{key}' matches no module of {spec.name}; the projector is "
                             f"{', '.join(c.projector)}")
        for m in copies:
            trainable[c.tower_of(m.path)] += m.params
            saved += m.params
    if not fp and trainable["projector"] == 0:
        fam = vlm.family(spec.composite)
        notes.append(f"freeze_multi_modal_projector: false does nothing under {s['finetuning_type']}: LlamaFactory's "
                     "lora_target all never adapts the projector; train it with additional_target: "
                     f"{fam.projector if fam else c.projector[0]} (R-VLM-FREEZE)")
    return trainable, hits, notes, saved


def _full(sk: Skeleton, s: dict[str, Any]) -> dict[str, int]:
    frozen = _frozen(sk.composite, s["freeze_vision_tower"], s["freeze_multi_modal_projector"],
                     s["freeze_language_model"])
    trainable = dict.fromkeys(vlm.TOWERS, 0)
    for name, numel in sk.parameters:
        if not any(f in name for f in frozen):
            trainable[sk.composite.tower_of(name)] += numel
    return trainable


def _freeze(sk: Skeleton, spec: ModelSpec, s: dict[str, Any]) -> dict[str, int]:
    """_setup_freeze_tuning on the composite: layer indices come from the text model but match any tower's
    parameter names (a vision block with the same index trains too when the tower is not frozen)."""
    layers = trainable_layer_ids(sk.text_layers, s["freeze_trainable_layers"], s["use_llama_pro"])
    names = [name for name, _ in sk.parameters]
    hidden = {name.split(".0.")[-1].split(".")[0] for name in names if ".0." in name} | \
             {name.split(".1.")[-1].split(".")[0] for name in names if ".0." not in name and ".1." in name}
    outside = {name.split(".")[-2] for name in names if _LAYER.search(name) is None and "." in name}
    wanted, extra = _split(s["freeze_trainable_modules"]) or ["all"], _split(s["freeze_extra_modules"])
    for module in wanted:
        if module != "all" and module not in hidden:
            raise InputError(f"freeze_trainable_modules: {module!r} is not a module of {spec.name}'s layers; "
                             f"choose from {', '.join(sorted(hidden))}")
    for module in extra:
        if module not in outside:
            raise InputError(f"freeze_extra_modules: {module!r} is not a module outside {spec.name}'s layers; "
                             f"choose from {', '.join(sorted(outside))}")
    keys = [f".{i}.{'' if m == 'all' else m}" for m in wanted for i in layers] + extra
    if not s["freeze_multi_modal_projector"]:
        keys += list(sk.composite.projector)
    frozen = _frozen(sk.composite, s["freeze_vision_tower"], s["freeze_multi_modal_projector"],
                     s["freeze_language_model"])
    trainable = dict.fromkeys(vlm.TOWERS, 0)
    for name, numel in sk.parameters:
        if any(k in name for k in keys) and not any(f in name for f in frozen):
            trainable[sk.composite.tower_of(name)] += numel
    return trainable


_DEFAULTS = {"finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "additional_target": None,
             "use_dora": False, "freeze_vision_tower": True, "freeze_multi_modal_projector": True,
             "freeze_language_model": False, "freeze_trainable_layers": 2, "freeze_trainable_modules": "all",
             "freeze_extra_modules": None, "use_llama_pro": False, "oft_rank": 0, "oft_block_size": 32}


def count_towers(model: ModelSpec | str, **settings: Any) -> TowerCount:
    """The trainable parameters of each tower for LlamaFactory keys *settings* (their defaults when left out:
    LoRA r8 on all, vision tower and projector frozen)."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    s = {**_DEFAULTS, **{k: v for k, v in settings.items() if k in _DEFAULTS and v is not None}}
    sk = skeleton(spec)
    notes: list[str] = []
    targets: tuple[str, ...] = ()
    adapted, saved, language = 0, 0, ()
    method = s["finetuning_type"]
    if method in ("lora", "oft"):
        if s["use_llama_pro"]:
            raise InputError("use_llama_pro: lfgen does not count LLaMA Pro expansion on a vision-language model")
        trainable, hits, notes, saved = _lora(sk, spec, s)
        targets = tuple(sorted({m.path.rsplit(".", 1)[-1] for m in hits}))
        adapted = len(hits)
        language = _language_groups(sk, hits, s)
    elif method == "full":
        trainable = _full(sk, s)
    elif method == "freeze":
        trainable = _freeze(sk, spec, s)
    else:
        raise InputError(f"finetuning_type: must be lora, oft, freeze or full (got {method!r})")
    return TowerCount(model=spec.name, model_type=spec.composite, finetuning_type=method, params=sk.tower_params(),
                      trainable=trainable, targets=targets, adapted=adapted, notes=tuple(notes),
                      language_modules=language, saved=saved)


def _language_groups(sk: Skeleton, hits: list[Module], s: dict[str, Any]) -> tuple[tuple[str, int, int, int, int], ...]:
    """The adapted modules of the language model, grouped by name and shape, with their adapter parameters."""
    groups: dict[tuple[str, int, int], int] = {}
    for m in hits:
        if sk.composite.tower_of(m.path) == "language":
            key = (m.path.rsplit(".", 1)[-1], m.in_features, m.out_features)
            groups[key] = groups.get(key, 0) + 1
    out = []
    for (name, fan_in, fan_out), count in groups.items():
        if s["finetuning_type"] == "oft":
            per = oft_params(fan_in, s["oft_rank"], s["oft_block_size"])
        else:
            per = s["lora_rank"] * (fan_in + fan_out) + (fan_out if s["use_dora"] else 0)
        out.append((name, fan_in, fan_out, count, per * count))
    return tuple(out)


def lora_count(model: ModelSpec | str, **settings: Any) -> LoraCount:
    """``count_towers`` as the LoraCount the memory model and explain read: every tower's trainable parameters
    (the optimizer holds them all), the language model's adapted modules (its activation terms are per decoder
    layer) and the whole checkpoint's parameters."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    count = count_towers(spec, **settings)
    adapted = tuple(Adapted(name, n, fan_in, fan_out, params) for name, fan_in, fan_out, n, params in
                    count.language_modules)
    rank = settings.get("lora_rank", 8) if count.finetuning_type == "lora" else 0
    return LoraCount(model=spec.name, rank=rank, targets=count.targets, adapted=adapted,
                     lora_params=count.total_trainable - count.saved, modules_to_save_params=count.saved,
                     total_params=sum(count.params.values()), notes=count.notes)


def tower_params(model: ModelSpec | str) -> dict[str, int]:
    """Parameters of the language model, the vision tower and the projector (the whole checkpoint)."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    return skeleton(spec).tower_params()


def split_note(model: ModelSpec | str, **settings: Any) -> str:
    """One line for explain: each tower's trainable parameters for LlamaFactory keys *settings*."""
    try:
        count = count_towers(model, **settings)
    except InputError as exc:
        return f"trainable per tower: not counted ({exc})"
    return count.line()
