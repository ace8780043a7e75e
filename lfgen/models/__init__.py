"""Model-aware estimates: architecture numbers, LoRA target names, exact trainable counts, memory; for
vision-language models every tower's counts and the image-token rules.

Nothing here downloads a model or imports torch/transformers at import time; the meta-device
skeleton is built lazily, with per-architecture tables as the fallback.
"""

from typing import TYPE_CHECKING

from lfgen._lazy import exports

_MODULES = {
    "lfgen.models.catalog": ("SUPPORTED_TYPES", "ModelSpec", "catalog_ids", "load_model"),
    "lfgen.models.memory": ("Fit", "MemoryEstimate", "MemorySettings", "Option", "estimate_memory",
                            "fit_micro_batch"),
    "lfgen.models.modules": ("ABSTRACT_TARGETS", "Inventory", "Targets", "inventory", "resolve_targets"),
    "lfgen.models.params": ("LoraCount", "count_lora_params"),
    "lfgen.models.towers": ("TowerCount", "count_towers", "tower_params"),
    "lfgen.models.image_tokens": ("ImageRule", "image_tokens", "rule_for"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.models.catalog import SUPPORTED_TYPES, ModelSpec, catalog_ids, load_model
    from lfgen.models.memory import (
        Fit,
        MemoryEstimate,
        MemorySettings,
        Option,
        estimate_memory,
        fit_micro_batch,
    )
    from lfgen.models.modules import (
        ABSTRACT_TARGETS,
        Inventory,
        Targets,
        inventory,
        resolve_targets,
    )
    from lfgen.models.image_tokens import ImageRule, image_tokens, rule_for
    from lfgen.models.params import LoraCount, count_lora_params
    from lfgen.models.towers import TowerCount, count_towers, tower_params


# Lazy: the builder looks a model up without loading the memory model's schemas (startup budget).
__getattr__ = exports(__name__, _EXPORTS)


__all__ = [
    "ABSTRACT_TARGETS",
    "ImageRule",
    "SUPPORTED_TYPES",
    "Fit",
    "Inventory",
    "LoraCount",
    "MemoryEstimate",
    "MemorySettings",
    "ModelSpec",
    "Option",
    "Targets",
    "TowerCount",
    "catalog_ids",
    "count_lora_params",
    "count_towers",
    "estimate_memory",
    "fit_micro_batch",
    "image_tokens",
    "inventory",
    "load_model",
    "resolve_targets",
    "rule_for",
    "tower_params",
]
