"""The GPU catalog (``presets/gpus.yaml``) and the hardware a config is sized for."""

from __future__ import annotations

import functools
import re

from dataclasses import dataclass

from lfgen.errors import InputError, did_you_mean
from lfgen.resources import load_data


@dataclass(frozen=True)
class Peak:
    """A GPU's peak throughput (dense 16-bit tensor and FP32 TFLOPS, memory GB/s) and the document it is from."""

    tflops_16: float
    tflops_32: float
    bandwidth_gbs: float
    source: str


@dataclass(frozen=True)
class Gpu:
    """One GPU model of the catalog (tests/catalogs/test_catalogs.py validates every entry)."""

    name: str
    memory_gb: float
    bf16: bool | None  # None: unknown (only --gpu-mem was given)
    fa2: bool | None
    arch: str = "unknown"
    aliases: tuple[str, ...] = ()
    peak: Peak | None = None  # None: unknown (--gpu-mem): no time estimate


@dataclass(frozen=True)
class Hardware:
    """What the config is sized for: one GPU model, how many of them."""

    gpu: Gpu
    num_gpus: int = 1


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removeprefix("nvidia").removeprefix("geforce")


@functools.cache
def _catalog() -> tuple[dict[str, Gpu], dict[str, list[str]]]:
    data = load_data("gpus.yaml")
    by_key: dict[str, Gpu] = {}
    for entry in data["gpus"]:
        peak = Peak(**entry["peak"]) if entry.get("peak") else None
        gpu = Gpu(**{**entry, "aliases": tuple(entry.get("aliases", ())), "peak": peak})
        for key in [gpu.name, *gpu.aliases]:
            by_key[_norm(key)] = gpu
        by_key.setdefault(_norm(gpu.name.removeprefix("RTX ")), gpu)
    return by_key, data.get("ambiguous", {})


def gpu_names() -> list[str]:
    by_key, _ = _catalog()
    return sorted({gpu.name for gpu in by_key.values()}, key=lambda n: (by_key[_norm(n)].memory_gb, n))


def find_gpu(name: str) -> Gpu:
    """Look a GPU up by name or alias; an unknown name gets close matches in the error."""
    by_key, ambiguous = _catalog()
    key = _norm(name)
    if key in by_key:
        return by_key[key]
    if key in ambiguous:
        raise InputError(f"--gpu: {name!r} names more than one card; use one of {', '.join(ambiguous[key])}")
    names = gpu_names()
    close = did_you_mean(name, names) or did_you_mean(key, by_key)
    raise InputError(
        f"--gpu: unknown GPU {name!r}{close}; known GPUs: {', '.join(names)} "
        "(or give the memory with --gpu-mem GB)"
    )


def gpu_with_memory(memory_gb: float) -> Gpu:
    """A GPU known only by its memory: bf16 and FlashAttention support are unknown."""
    if not memory_gb > 0:
        raise InputError(f"--gpu-mem: must be a number of GB above 0 (got {memory_gb:g})")
    return Gpu(name=f"{memory_gb:g} GB GPU", memory_gb=memory_gb, bf16=None, fa2=None)
