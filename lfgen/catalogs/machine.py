"""This machine, as a build sees it without importing torch: the GPUs its driver shows, and which of the optional
packages a LlamaFactory run can use (flash-attn, liger-kernel, deepspeed) its Python has.

A build sized for a GPU takes it from --gpu; without one it takes what is here (``target``): the NVIDIA driver's
``/proc/driver/nvidia/gpus/*/information`` (the model name, mapped onto the catalog), honouring
CUDA_VISIBLE_DEVICES; no GPU at all is the CPU target. ``$LFGEN_GPU`` (a catalog name or ``cpu``) replaces the
look, for a machine that makes configs for another one, and for tests that must not depend on the machine.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

GPU_ENV = "LFGEN_GPU"
CPU = "cpu"
_DRIVER = Path("/proc/driver/nvidia/gpus")
_DEV = Path("/dev")


@dataclass(frozen=True)
class Target:
    """What a build without --gpu is for: ``cpu``, a catalog GPU name, or None (a GPU lfgen cannot name)."""

    name: str | None
    how: str  # where lfgen learned it, for explain ("no GPU visible here", "$LFGEN_GPU", ...)
    seen: str = ""  # the driver's model name of an unknown GPU

    @property
    def is_cpu(self) -> bool:
        return self.name == CPU


def _visible_count(found: int) -> int:
    """How many of the driver's *found* GPUs CUDA_VISIBLE_DEVICES leaves (unset: all; empty or -1: none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    items = [item.strip() for item in visible.split(",") if item.strip()]
    kept = []
    for item in items:
        if item.startswith("-"):
            break  # CUDA stops at the first invalid index
        kept.append(item)
    return min(found, len(kept))


def driver_gpus() -> list[str]:
    """The model names of the NVIDIA GPUs visible to this process (empty without the driver)."""
    try:
        folders = sorted(p for p in _DRIVER.iterdir() if p.is_dir())
    except OSError:
        folders = []
    names = []
    for folder in folders:
        try:
            text = (folder / "information").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        names.append(found.group(1).strip() if found else "unknown NVIDIA GPU")
    if not names and any(_DEV.glob("nvidia[0-9]*")):
        names = ["unknown NVIDIA GPU"]  # the device node without /proc (some containers)
    return names[:_visible_count(len(names))]


def catalog_name(model: str) -> str | None:
    """The catalog GPU a driver model name is (``NVIDIA A100-SXM4-80GB`` -> A100-80), or None."""
    from lfgen.catalogs.gpus import _catalog, _norm

    text = _norm(model).removeprefix("tesla")
    by_key, _ = _catalog()
    found = []
    for gpu in {gpu.name: gpu for gpu in by_key.values()}.values():
        # "A100-80" is sold as "A100-SXM4-80GB": match the stem, then prefer the card whose memory is named.
        stems = {_norm(re.sub(r"-\d+$", "", gpu.name)), _norm(gpu.name.removeprefix("RTX ")),
                 *(_norm(alias) for alias in gpu.aliases)}
        for stem in stems:
            if stem and stem in text:
                found.append((len(stem), f"{gpu.memory_gb:g}gb" in text, gpu.name))
    if not found:
        return None
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return found[0][2]


def target() -> Target:
    """The hardware a build without --gpu is sized for (see the module's docstring)."""
    forced = os.environ.get(GPU_ENV, "").strip()
    if forced:
        return Target(CPU if forced.lower() == CPU else forced, f"${GPU_ENV}={forced}")
    names = driver_gpus()
    if not names:
        return Target(CPU, "no GPU is visible here")
    name = catalog_name(names[0])
    how = f"the GPU visible here ({names[0]}{f', {len(names)} visible' if len(names) > 1 else ''})"
    return Target(name, how, seen=names[0])


@functools.cache
def installed(package: str) -> bool:
    """Whether this Python can import *package* (found, not imported: it may pull in torch)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


# The optional packages the rules ask about: LlamaFactory's name for each (its error names the pip package).
PACKAGES = {"flash_attn": "flash-attn", "liger_kernel": "liger-kernel", "deepspeed": "deepspeed"}
