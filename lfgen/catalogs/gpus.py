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


def cpu_device(cores: int | None = None) -> Gpu:
    """The CPU as a device of the time estimate (``cpu:`` in presets/gpus.yaml): per-core figures x *cores* (default:
    the cores this process may use). Not a --gpu choice: a run trained on the CPU is timed, calibrated and budgeted
    on it; its memory is the machine's, so memory_gb is 0 (no fit is decided on it)."""
    import os

    entry = load_data("gpus.yaml")["cpu"]
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per = entry["per_core"]
    peak = Peak(tflops_16=per["tflops_32"] * cores, tflops_32=per["tflops_32"] * cores,
                bandwidth_gbs=per["bandwidth_gbs"] * cores, source=f"{cores} core(s) x {per['source']}")
    return Gpu(name=entry["name"], memory_gb=0, bf16=False, fa2=False, arch=entry["arch"], peak=peak)


def is_cpu(name: str) -> bool:
    return _norm(name) == "cpu"


def device(name: str) -> Gpu:
    """A device of the time estimate by name: ``CPU`` or a GPU of the catalog (``find_gpu``'s error otherwise)."""
    return cpu_device() if is_cpu(name) else find_gpu(name)


# nvidia-smi's form-factor and memory-type words, dropped before a name is looked up ("NVIDIA A100-SXM4-80GB",
# "NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-16GB"): what is left is a catalog name or alias.
_SMI_WORDS = re.compile(r"sxm\d?|pcie|hbm\d?e?|nvl|generation")


def gpu_from_smi(name: str) -> Gpu | None:
    """The catalog GPU nvidia-smi calls *name*, None when the catalog has no such card (or the name is ambiguous)."""
    by_key, _ = _catalog()
    key = _norm(name).removeprefix("tesla")
    bare = _SMI_WORDS.sub("", key)
    for candidate in (key, bare, bare.removesuffix("gb")):
        if candidate in by_key:
            return by_key[candidate]
    return None


def gpu_with_memory(memory_gb: float) -> Gpu:
    """A GPU known only by its memory: bf16 and FlashAttention support are unknown."""
    if not memory_gb > 0:
        raise InputError(f"--gpu-mem: must be a number of GB above 0 (got {memory_gb:g})")
    return Gpu(name=f"{memory_gb:g} GB GPU", memory_gb=memory_gb, bf16=None, fa2=None)
