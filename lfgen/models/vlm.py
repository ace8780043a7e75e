"""Vision-language models: LlamaFactory's view of a composite checkpoint (``presets/vlm.yaml``).

A composite config.json holds a ``text_config`` and a ``vision_config`` (older Qwen2-VL / Qwen2.5-VL files
keep the text numbers at the top level). Here: which model_types are composite, how LlamaFactory splits
their modules into vision tower, projector and language model (its COMPOSITE_MODELS), the family's
templates and image-token rule, and the text part lfgen's text tables and memory model read.

Plain data and dict handling only (no torch): ``lfgen.models.catalog`` calls it while parsing a config, and
``lfgen.models.towers`` counts the towers on the real skeleton.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from lfgen.errors import InputError
from lfgen.resources import load_data

# LlamaFactory's _register_composite_model defaults for the lists a registration leaves out.
_DEFAULT_KEYS = {"projector": ("multi_modal_projector",), "vision": ("vision_tower",),
                 "language": ("language_model", "lm_head"), "lora_conflict": ()}
# Keys of a flat (text numbers at the top level) Qwen2-VL config that are not the text model's.
_NOT_TEXT = ("vision_config", "text_config", "architectures", "auto_map", "quantization_config", "_name_or_path",
             "transformers_version")
TOWERS = ("language", "vision", "projector")


@dataclass(frozen=True)
class Composite:
    """How LlamaFactory splits one composite model_type (visual.py ``CompositeModel``)."""

    model_type: str
    projector: tuple[str, ...]
    vision: tuple[str, ...]
    language: tuple[str, ...]
    lora_conflict: tuple[str, ...]

    def tower_of(self, path: str) -> str:
        """The tower a module or parameter path belongs to: projector keys first (Qwen-VL's merger sits
        inside ``visual``), then vision, else the language model. LlamaFactory matches by substring."""
        if any(key in path for key in self.projector):
            return "projector"
        if any(key in path for key in self.vision):
            return "vision"
        return "language"


@dataclass(frozen=True)
class Family:
    """A composite model_type lfgen counts and checks: its text architecture, templates and image rule."""

    model_type: str
    text_type: str  # lfgen's text table, or "from_text_config"
    templates: tuple[str, ...]
    projector: str  # what additional_target names to train the whole projector
    image: dict[str, Any]


@functools.cache
def _data() -> dict[str, Any]:
    return load_data("vlm.yaml")


def composite(model_type: str) -> Composite | None:
    """LlamaFactory's split of *model_type*, or None when it is not a registered composite model."""
    keys = _data()["composite"].get(model_type)
    if keys is None:
        return None
    return Composite(model_type, **{k: tuple(keys.get(k, default)) for k, default in _DEFAULT_KEYS.items()})


def composite_types() -> list[str]:
    return list(_data()["composite"])


def family(model_type: str) -> Family | None:
    body = _data()["families"].get(model_type)
    if body is None:
        return None
    return Family(model_type, body["text_type"], tuple(body["templates"]), body["projector"], dict(body["image"]))


def family_types() -> list[str]:
    """The composite model_types lfgen counts per tower (its own tests cover each)."""
    return list(_data()["families"])


def defaults() -> dict[str, int]:
    """LlamaFactory's image_max_pixels / image_min_pixels defaults."""
    return dict(_data()["defaults"])


def removed_key(key: str) -> str | None:
    """Why LlamaFactory 0.9.5 rejects *key* and what replaces it, for keys it removed or renamed."""
    return _data()["removed_keys"].get(key)


def unsupported(model_type: str) -> str | None:
    """Why LlamaFactory cannot train a *model_type* model (CLIP, InstructBLIP) and the nearest it can."""
    return _data()["unsupported"].get(str(model_type).lower())


def unsupported_id_type(model_id: str) -> str | None:
    """The model_type of a hub id of a model LlamaFactory cannot train that the catalog does not hold (by prefix)."""
    lowered = str(model_id).strip().lower()
    return next((t for prefix, t in _data()["unsupported_ids"].items() if lowered.startswith(prefix)), None)


def is_composite_config(config: dict[str, Any]) -> bool:
    return composite(str(config.get("model_type"))) is not None


def text_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The language model's config of a composite *config*, with the model_type of lfgen's text table.

    Raises InputError for a composite model_type lfgen has no family for (glm4v, minicpmv, ...).
    """
    model_type = str(config.get("model_type"))
    fam = family(model_type)
    if fam is None:
        raise InputError(f"{where}: vision-language model_type={model_type!r} is not one lfgen counts yet; "
                         f"lfgen knows {', '.join(family_types())}")
    nested = config.get("text_config")
    if isinstance(nested, dict) and nested:
        text = dict(nested)
    else:  # Qwen2-VL / Qwen2.5-VL config.json files keep the text numbers at the top level
        text = {k: v for k, v in config.items() if k not in _NOT_TEXT}
    # transformers 5 ties a composite model's head by the top-level flag (InternVL: true there, false in
    # text_config, and the head is tied); an unset flag leaves the text model's own default.
    if config.get("tie_word_embeddings") is not None:
        text["tie_word_embeddings"] = config["tie_word_embeddings"]
    elif text.get("tie_word_embeddings") is None:
        text.pop("tie_word_embeddings", None)
    text_type = text.get("model_type") if fam.text_type == "from_text_config" else fam.text_type
    if fam.text_type == "from_text_config" and not text_type:
        text_type = "llama"  # transformers' default text_config for LLaVA is a Llama
    text["model_type"] = text_type
    return text


# Vision-config keys that hold layer indices and must stay below a shrunk depth.
_LAYER_LISTS = ("fullatt_block_indexes", "deepstack_visual_indexes", "intermediate_layers_indices")


def shrink(config: dict[str, Any], layers: int) -> dict[str, Any]:
    """*config* with *layers* text layers and vision blocks (tests: the counts are per layer, the widths
    stay the real model's). Index lists are kept below the new depth."""
    out = dict(config)
    text = dict(out.get("text_config") or {})
    text["num_hidden_layers"] = layers
    if text.get("cross_attention_layers"):  # Llama-3.2-Vision: keep one cross-attention layer
        text["cross_attention_layers"] = [layers - 1]
    out["text_config"] = text
    vision = dict(out.get("vision_config") or {})
    for key in ("depth", "num_hidden_layers"):
        if key in vision:
            vision[key] = layers
    if "num_global_layers" in vision:
        vision["num_global_layers"] = min(layers, vision["num_global_layers"])
    for key in _LAYER_LISTS:
        if isinstance(vision.get(key), list):
            vision[key] = [i for i in vision[key] if i < layers] or [layers - 1]
    out["vision_config"] = vision
    return out
