"""Model-aware estimates: architecture numbers, LoRA target names, exact trainable counts, memory.

Nothing here downloads a model or imports torch/transformers at import time; the meta-device
skeleton is built lazily, with per-architecture tables as the fallback.
"""

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SUPPORTED_TYPES": "catalog", "ModelSpec": "catalog", "catalog_ids": "catalog", "load_model": "catalog",
    "Fit": "memory", "MemoryEstimate": "memory", "MemorySettings": "memory", "Option": "memory",
    "estimate_memory": "memory", "fit_micro_batch": "memory",
    "ABSTRACT_TARGETS": "modules", "Inventory": "modules", "Targets": "modules", "inventory": "modules",
    "resolve_targets": "modules", "LoraCount": "params", "count_lora_params": "params",
}

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.models.catalog import SUPPORTED_TYPES, ModelSpec, catalog_ids, load_model  # noqa: F401
    from lfgen.models.memory import Fit, MemoryEstimate, MemorySettings, Option, estimate_memory, fit_micro_batch  # noqa: F401
    from lfgen.models.modules import ABSTRACT_TARGETS, Inventory, Targets, inventory, resolve_targets  # noqa: F401
    from lfgen.models.params import LoraCount, count_lora_params  # noqa: F401


def __getattr__(name: str) -> Any:
    # Lazy: the builder looks a model up without loading the memory model's schemas (startup budget).
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"lfgen.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lfgen.models' has no attribute {name!r}")


__all__ = [
    "ABSTRACT_TARGETS",
    "SUPPORTED_TYPES",
    "Fit",
    "Inventory",
    "LoraCount",
    "MemoryEstimate",
    "MemorySettings",
    "ModelSpec",
    "Option",
    "Targets",
    "catalog_ids",
    "count_lora_params",
    "estimate_memory",
    "fit_micro_batch",
    "inventory",
    "load_model",
    "resolve_targets",
]
