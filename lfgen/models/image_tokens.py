"""How many sequence tokens an image becomes, per vision-language family, at a run's image_max_pixels.

LlamaFactory (``data/mm_plugin.py``) first scales an image whose area passes ``image_max_pixels`` down to that
area (and one under ``image_min_pixels`` up), keeping the aspect, with ``int()`` sides; then the model's
processor decides the tokens. One function per rule (``presets/vlm.yaml`` names each family's rule and its
numbers; a local model folder's config.json and processor config override them):

* ``grid`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): sides rounded to patch x merge within the processor's own
  min/max pixels (transformers ``smart_resize``), one token per (patch x merge)^2 pixels;
* ``vit`` (LLaVA-1.5, PaliGemma, InternVL without crop_to_patches): a fixed grid per image;
* ``anyres`` (LLaVA-NeXT): base grid + best-fit tiles, unpadded, one newline token per row;
* ``rows`` (Pixtral, Mistral 3): one token per (patch x merge) block, one break token per row;
* ``fixed`` (Gemma 3's 256 soft tokens; Llama-3.2-Vision's single <|image|>: the image enters by
  cross-attention).

``wrap`` adds the markers around each span (Qwen's <|vision_start|>/<|vision_end|>): the count is what the
image takes of cutoff_len.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.models import vlm

_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class ImageRule:
    """One model's image-token rule with its numbers (from presets/vlm.yaml, config.json, the processor)."""

    family: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    source: str = "presets/vlm.yaml"

    def describe(self) -> str:
        n = self.numbers
        if self.rule == "grid":
            side = n["patch"] * n["merge"]
            return (f"{self.family}: one token per {side}x{side} pixels, {n['min_pixels']:,}-{n['max_pixels']:,} "
                    f"pixels per image in the processor, +{n['wrap']} markers")
        if self.rule == "vit":
            return f"{self.family}: a fixed {_vit(n)} tokens per image (+{n['wrap']} markers)"
        if self.rule == "anyres":
            return f"{self.family}: a {n['crop']} px base grid + best-fit tiles of {n['pinpoints']}"
        if self.rule == "rows":
            block = n["patch"] * n["merge"]
            return f"{self.family}: one token per {block}x{block} block + one per row, longest edge {n['longest_edge']}"
        return f"{self.family}: {n['tokens']} token(s) per image (+{n['wrap']} markers)"


def _scaled(width: int, height: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """LlamaFactory's _preprocess_image: the area scaled into [min_pixels, max_pixels], sides truncated."""
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width * height < min_pixels:
        factor = math.sqrt(min_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    return max(width, 1), max(height, 1)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' Qwen2-VL smart_resize (Python's round: half to even, as there)."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _grid(n: dict[str, Any], width: int, height: int) -> int:
    side = n.get("min_side", 0)  # Qwen2VLPlugin: sides under 28 px are stretched, extreme aspects squeezed
    if min(width, height) < side:
        width, height = max(width, side), max(height, side)
    if width / height > 200:
        width = height * 180
    if height / width > 200:
        height = width * 180
    factor = n["patch"] * n["merge"]
    h, w = smart_resize(height, width, factor, n["min_pixels"], n["max_pixels"])
    return (h // factor) * (w // factor) + n["wrap"]


def _vit(n: dict[str, Any], *_: int) -> int:
    side = n["image_size"] // n["patch"]
    tokens = side * side
    if n.get("downsample"):
        tokens = int(tokens * n["downsample"] ** 2)
    if n.get("strategy") == "full":  # the CLS token stays
        tokens += 1
    return tokens


def _best_fit(height: int, width: int, pinpoints: list[list[int]]) -> tuple[int, int]:
    """transformers' select_best_resolution."""
    best, most, least = (0, 0), 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = w * h - effective
        if effective > most or (effective == most and wasted < least):
            best, most, least = (h, w), effective, wasted
    return best


def _anyres(n: dict[str, Any], width: int, height: int) -> int:
    """LlavaNextProcessor._get_number_of_features, minus the CLS token LlamaFactory drops (default strategy)."""
    crop, patch = n["crop"], n["patch"]
    best_h, best_w = _best_fit(height, width, n["pinpoints"])
    side = crop // patch
    cur_h, cur_w = side * (best_h // crop), side * (best_w // crop)
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(width * (cur_h / height), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    tokens = cur_h * cur_w + cur_h + side * side + 1
    return tokens - (1 if n.get("strategy", "default") == "default" else 0)


def _rows(n: dict[str, Any], width: int, height: int) -> int:
    """PixtralImageProcessor's resize (fit in longest_edge, sides up to the patch), then PixtralPlugin's
    count: a token per (patch x merge) block and a break (the last one: an end token) per row."""
    edge, patch = n["longest_edge"], n["patch"]
    ratio = max(height / edge, width / edge)
    if ratio > 1:
        height, width = math.floor(height / ratio), math.floor(width / ratio)
    height, width = ((height - 1) // patch + 1) * patch, ((width - 1) // patch + 1) * patch
    block = patch * n["merge"]
    return (height // block) * (width // block + 1)


def _fixed(n: dict[str, Any], *_: int) -> int:
    return n["tokens"] + n["wrap"]


_RULES = {"grid": _grid, "vit": lambda n, w, h: _vit(n) + n["wrap"], "anyres": _anyres, "rows": _rows,
          "fixed": _fixed}
_SCALED = ("grid", "anyres", "rows")  # rules that see the image's size (the others do not)


def vision_patches(rule: ImageRule, tokens: int) -> int:
    """The vision tower's patches behind one image's *tokens* sequence tokens: what a trained tower's activations
    scale with. Qwen-VL and Pixtral merge merge x merge patches into a token, InternVL's pixel shuffle keeps
    downsample^2 of them; a fixed rule names its patches (Gemma 3 pools 4,096 into 256 soft tokens)."""
    n = rule.numbers
    core = max(0, tokens - n.get("wrap", 0))
    if rule.rule in ("grid", "rows"):
        return core * n.get("merge", 1) ** 2
    if rule.rule == "vit" and n.get("downsample"):
        return round(core / n["downsample"] ** 2)
    if rule.rule == "fixed":
        return int(n.get("patches", core))
    return core


def image_tokens(rule: ImageRule, width: int, height: int, image_max_pixels: int | None = None,
                 image_min_pixels: int | None = None) -> int:
    """Sequence tokens of one *width* x *height* image under *rule* at LlamaFactory's pixel bounds."""
    bounds = vlm.defaults()
    max_pixels = image_max_pixels or bounds["image_max_pixels"]
    min_pixels = image_min_pixels or bounds["image_min_pixels"]
    if rule.rule in _SCALED:
        width, height = _scaled(width, height, max_pixels, min_pixels)
    return _RULES[rule.rule](rule.numbers, width, height)


# ---------------------------------------------------------------- where the numbers come from

def _processor(folder: Path) -> dict[str, Any]:
    """The image processor's settings of a local model folder (transformers 4.x or 5.x layout)."""
    for name in _PROCESSOR_FILES:
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data.get("image_processor", data) if name == "processor_config.json" else data
    return {}


def _side(value: Any) -> int:
    if isinstance(value, dict):
        return int(value.get("height") or value.get("shortest_edge") or value.get("longest_edge"))
    return int(value[0] if isinstance(value, list) else value)


def _numbers(fam: vlm.Family, config: dict[str, Any], processor: dict[str, Any]) -> dict[str, Any]:
    n = {k: v for k, v in fam.image.items() if k != "rule"}
    vision = config.get("vision_config") or {}
    size = processor.get("size") or {}
    if fam.image["rule"] == "grid":
        n["patch"] = int(processor.get("patch_size") or vision.get("patch_size") or n["patch"])
        n["merge"] = int(processor.get("merge_size") or vision.get("spatial_merge_size") or n["merge"])
        n["min_pixels"] = int(processor.get("min_pixels") or size.get("shortest_edge") or n["min_pixels"])
        n["max_pixels"] = int(processor.get("max_pixels") or size.get("longest_edge") or n["max_pixels"])
    elif fam.image["rule"] in ("vit", "anyres"):
        crop = processor.get("crop_size") or vision.get("image_size") or 336
        n["image_size"] = n["crop"] = _side(crop)
        n["patch"] = _side(vision.get("patch_size") or processor.get("patch_size") or 14)
        n["strategy"] = config.get("vision_feature_select_strategy", "default")
        if fam.image.get("downsample_key"):
            n["downsample"] = float(config.get(fam.image["downsample_key"]) or 0.5)
        if fam.image["rule"] == "anyres":  # transformers' LlavaNextConfig default grid
            n["pinpoints"] = config.get("image_grid_pinpoints") or processor.get("image_grid_pinpoints") or \
                [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    elif fam.image["rule"] == "rows":
        n["patch"] = _side(vision.get("patch_size") or processor.get("patch_size") or 16)
        n["merge"] = int(config.get("spatial_merge_size") or 1)
        n["longest_edge"] = int(size.get("longest_edge") or n["longest_edge"])
    elif fam.image.get("config_key"):
        n["tokens"] = int(config.get(fam.image["config_key"]) or n["tokens"])
    return n


def rule_for(model: str | Any | None) -> ImageRule | None:
    """The image rule of *model* (a local folder with config.json, a catalog id or a ModelSpec), or None when
    it is not a vision-language model lfgen knows."""
    if model is None:
        return None
    from lfgen.models.catalog import ModelSpec, catalog_entry

    processor: dict[str, Any] = {}
    source = "presets/vlm.yaml"
    if isinstance(model, ModelSpec):
        config = json.loads(model.composite_config) if model.composite else {}
    else:
        folder = Path(str(model)).expanduser()
        if (folder / "config.json").is_file():
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            processor, source = _processor(folder), f"{folder}'s config.json and processor"
        else:
            entry = catalog_entry(str(model))
            config = dict(entry["config"]) if entry else {}
    fam = vlm.family(str(config.get("model_type"))) if isinstance(config, dict) else None
    if fam is None:
        return None
    if fam.model_type == "llava" and (config.get("vision_config") or {}).get("model_type") == "pixtral":
        # Pixtral-12B in llava-hf form: LlamaFactory's pixtral template counts rows of patches
        fam = vlm.Family(fam.model_type, fam.text_type, fam.templates, fam.projector,
                         {"rule": "rows", "longest_edge": 1024, "wrap": 0})
    return ImageRule(fam.model_type, fam.image["rule"], _numbers(fam, config, processor), source)
