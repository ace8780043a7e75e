"""Presets: the recommended LoRA configurations, loaded from ``presets/lora/*.yaml``."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lfgen.errors import InputError, did_you_mean
from lfgen.resources import load_data, presets_dir

PinnableKey = Literal["lora_rank", "lora_alpha", "lora_target", "lora_dropout"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraBlock(_Strict):
    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target: str = Field(min_length=1)

    @property
    def alpha_ratio(self) -> float:
        return self.alpha / self.rank


class SeedFigures(_Strict):
    trainable_params: str
    vram: str


class VisionBlock(_Strict):
    """What a preset writes on a vision-language model (RULES.md §8), by one rule."""

    rule: str  # R-VLM-FREEZE (seed 000's two towers), R-VLM-CAPTION (seed 001)
    why: str
    values: dict[str, Any] = {}  # LlamaFactory keys
    model: str | None = None  # the model when --model is not given
    only: bool = False  # the preset is for vision-language models only


class Preset(_Strict):
    """One named preset: a LoRA block, where it comes from, and what the data rules may not change."""

    name: str
    summary: str
    source: str
    lora: LoraBlock
    pinned: list[PinnableKey]
    seed_figures: SeedFigures
    # Settings a seed asks for that LlamaFactory has no key for (R-BIAS).
    unsupported: dict[str, str] = {}
    vision: VisionBlock | None = None  # on a vision-language model
    # Takes R-HW-FIT's steps (Liger, rank, 4-bit, cutoff_len) until the estimate fits, instead of refusing.
    steps_down: bool = False


class Choice(_Strict):
    """A value and the rule that explains it."""

    value: Any
    rule: str
    reason: str


class TrainingBlock(_Strict):
    """The training block shared by every preset (seed 002) and lfgen's own defaults."""

    source: str
    values: dict[str, Choice]
    defaults: dict[str, Choice]


@functools.cache
def load_presets() -> dict[str, Preset]:
    """Every shipped preset by name, in a stable order (the seed-002 four first)."""
    order = ["lightweight", "balanced", "a800", "large-rank", "conservative", "alpha-4x", "aggressive",
             "efficiency", "caption", "auto"]
    found = {}
    for path in sorted((presets_dir() / "lora").glob("*.yaml")):
        preset = Preset.model_validate(load_data(f"lora/{path.name}"))
        if preset.name != path.stem:
            raise ValueError(f"{path}: name {preset.name!r} does not match the file name")
        found[preset.name] = preset
    return {name: found[name] for name in sorted(found, key=lambda n: (order.index(n) if n in order else 99, n))}


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise InputError(
            f"preset: unknown preset {name!r}{did_you_mean(name, presets)}; "
            f"choose one of {', '.join(presets)} (see `lfgen presets`)"
        )
    return presets[name]


@functools.cache
def training_block() -> TrainingBlock:
    return TrainingBlock.model_validate(load_data("training.yaml"))
