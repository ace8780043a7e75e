"""Exact trainable parameter count of a LoRA run, as LlamaFactory + PEFT will build it.

Each adapted Linear (or Embedding) of shape in x out adds ``r * (in + out)`` (A: r x in,
B: out x r); DoRA adds a magnitude vector of ``out``. ``additional_target`` (PEFT
``modules_to_save``) trains a full copy of each matching module. The count follows what the
installed transformers 5.x really builds, which differs from the textbook in places; those
places come back as ``notes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lfgen.errors import InputError
from lfgen.models.catalog import ModelSpec, load_model
from lfgen.models.modules import Inventory, ModuleGroup, inventory, resolve_targets


@dataclass(frozen=True)
class Adapted:
    """One group of adapted modules and the LoRA parameters it adds."""

    name: str
    count: int
    in_features: int
    out_features: int
    params: int  # for all `count` modules


@dataclass(frozen=True)
class LoraCount:
    """Trainable parameters of a LoRA run on one model."""

    model: str
    rank: int
    targets: tuple[str, ...]
    adapted: tuple[Adapted, ...]
    lora_params: int
    modules_to_save_params: int
    total_params: int  # the frozen base model
    notes: tuple[str, ...]

    @property
    def trainable(self) -> int:
        return self.lora_params + self.modules_to_save_params

    @property
    def percent(self) -> float:
        """Trainable share as PEFT's ``print_trainable_parameters`` shows it."""
        return 100.0 * self.trainable / (self.total_params + self.trainable)


def _adapt(group: ModuleGroup, rank: int, use_dora: bool) -> Adapted:
    per = rank * (group.in_features + group.out_features)
    if use_dora:
        per += group.out_features  # DoRA's magnitude: one entry per output feature (embedding_dim)
    return Adapted(group.name, group.count, group.in_features, group.out_features, per * group.count)


def _modules_to_save(inv: Inventory, keys: Sequence[str]) -> int:
    # PEFT matches modules_to_save by plain suffix (``key.endswith(name)``, no dot boundary).
    total = 0
    for key in keys:
        hits = [g for g in inv.groups if g.path.endswith(key) or g.name.endswith(key)]
        if not hits:
            names = sorted({g.name for g in inv.groups if g.kind in ("embedding", "linear", "norm")})
            raise InputError(f"additional_target: '{key}' matches no module of {inv.model}; "
                             f"modules with weights include {', '.join(names)}")
        total += sum(g.count * g.params_each for g in hits)
    return total


def _surprises(inv: Inventory, spec: ModelSpec, targets: Sequence[str], rank: int) -> list[str]:
    notes = []
    experts = [g for g in inv.groups if g.kind == "experts"]
    if experts:
        frozen = sum(g.count * g.params_each for g in experts)
        notes.append(
            f"{spec.model_type}: the {spec.num_experts} experts per layer are fused parameter tensors in "
            f"transformers 5.x, not nn.Linear, so LoRA leaves them frozen: {frozen / 1e9:.2f}B of "
            f"{inv.total_params / 1e9:.2f}B params ({100 * frozen / inv.total_params:.0f}%) get no adapter")
    if any(g.kind == "router" for g in inv.groups):
        notes.append(f"{spec.model_type}: the router 'gate' is a TopKRouter, not nn.Linear; it stays frozen")
    for g in inv.groups:
        is_head = g.kind == "linear" and spec.vocab_size in (g.in_features, g.out_features)
        if is_head and g.name in targets:
            notes.append(f"'{g.name}' (the {g.in_features}x{g.out_features} output head) gets an adapter: "
                         f"LlamaFactory's 'all' only skips modules named lm_head; it adds "
                         f"{rank * (g.in_features + g.out_features):,} params and a full-vocab LoRA matmul")
        if g.name == "shared_expert_gate" and g.name in targets:
            notes.append("qwen2_moe: the 1-output shared_expert_gate is a Linear, so 'all' adapts it too")
    if spec.multimodal:
        notes.append("multimodal checkpoint: counts cover the text model; by default LlamaFactory keeps the vision "
                     "tower frozen (freeze_vision_tower) and lora_target all never adapts the projector (only "
                     "additional_target trains it); lfgen.models.towers counts every tower")
    return notes


def count_lora_params(
    model: ModelSpec | str,
    rank: int,
    target: str | Sequence[str] = "all",
    additional_target: str | Sequence[str] | None = None,
    use_dora: bool = False,
    source: str = "auto",
) -> LoraCount:
    """Count the parameters LoRA rank *rank* on *target* trains on *model* (exact, no weights)."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise InputError(f"lora_rank: must be a positive integer (got {rank!r})")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    inv = inventory(spec, source)
    resolved = resolve_targets(inv, target)
    adapted = tuple(_adapt(g, rank, use_dora) for name in resolved.names for g in inv.named(name)
                    if g.kind in ("linear", "embedding"))
    keys = [k.strip() for k in (additional_target.split(",") if isinstance(additional_target, str)
                                else additional_target or []) if k.strip()]
    notes = (*inv.notes, *resolved.notes, *_surprises(inv, spec, resolved.names, rank))
    return LoraCount(
        model=spec.name, rank=rank, targets=resolved.names, adapted=adapted,
        lora_params=sum(a.params for a in adapted),
        modules_to_save_params=_modules_to_save(inv, keys),
        total_params=inv.total_params, notes=tuple(notes),
    )
