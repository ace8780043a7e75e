"""The time estimate of a config lfgen wrote (a run's ``lfgen_run.yaml``, an experiment's ``runs/<run>.yaml``) and the
device a run trained on: what calibrate, status's pending runs and tune's --budget estimate.

A written config carries its recipe (``# lfgen-recipe:``): the rows lfgen counted and the data's measured lengths,
so the estimate is the one explain gives, without reading the data again. The device is, best first: what the
caller names (``--gpu``), where the run trained (its ``lfgen_env.json``: ``"device": "cpu"`` is the CPU, a GPU's
nvidia-smi name is looked up in the catalog), then the GPU it was sized for (its recipe's ``--gpu``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError


@dataclass(frozen=True)
class Placement:
    """The device a run is timed on, how many of them, and how lfgen knows."""

    gpu: Any  # lfgen.catalogs.gpus.Gpu (the CPU included)
    num_gpus: int
    source: str


@dataclass(frozen=True)
class WrittenConfig:
    """A config file lfgen wrote, read back: its keys and what its recipe recorded."""

    path: Path
    config: dict[str, Any]
    options: dict[str, Any]
    samples: int | None
    lengths: Any  # lfgen.builder.data_lengths.Lengths, or None

    root: Path | None = None  # where its relative paths resolve (its lfgen-root: line)

    @property
    def model(self) -> str:
        """model_name_or_path, a local folder made absolute from the config's root (any cwd reads it)."""
        model = str(self.config.get("model_name_or_path", ""))
        if self.root is not None and model and not Path(model).is_absolute() and (self.root / model).exists():
            return str((self.root / model).resolve())
        return model


def read_written(path: str | Path) -> WrittenConfig:
    """*path* parsed with its recipe (InputError when it cannot be read or parsed)."""
    from lfgen.builder.data_lengths import Lengths
    from lfgen.builder.recipe import read_recipe
    from lfgen.paths import config_root
    from lfgen.runs.environment import counted_samples
    from lfgen.yamlio import parse_config, read_text

    path = Path(path)
    text = read_text(path, "config file")
    config = parse_config(text, str(path))
    recipe = read_recipe(text)
    lengths = None
    if recipe is not None and recipe.lengths:
        try:
            lengths = Lengths(**recipe.lengths)
        except (TypeError, ValueError):
            lengths = None  # a recipe of another lfgen version: the estimate counts every sample at cutoff_len
    return WrittenConfig(path, config, recipe.options if recipe else {}, counted_samples(text, config), lengths,
                         config_root(path, text))


def placement(written: WrittenConfig, environment: dict[str, Any] | None = None,
              gpu: str | None = None) -> Placement | None:
    """The device *written* trains (or trained) on; None when nothing says (the caller asks for --gpu)."""
    from lfgen.catalogs.gpus import cpu_device, device, gpu_from_smi

    recorded = int(written.options.get("num_gpus", 1) or 1)
    seen = (environment or {}).get("gpus") or []
    if gpu is not None:
        return Placement(device(gpu), len(seen) or recorded, "--gpu")
    if (environment or {}).get("device") == "cpu":
        return Placement(cpu_device(), 1, "lfgen_env.json: trained on the CPU")
    if seen and (card := gpu_from_smi(seen[0])) is not None:
        return Placement(card, len(seen), f"lfgen_env.json: {seen[0]}")
    if written.options.get("gpu"):
        try:
            return Placement(device(str(written.options["gpu"])), recorded, "the recipe's --gpu")
        except InputError:
            return None
    return None


def machine_device() -> tuple[Any, str]:
    """This machine's device for the time estimate, and how it is named: its first GPU nvidia-smi lists (None when
    the catalog does not know it), else the CPU. Asked once per process and PATH (nvidia-smi is a subprocess)."""
    import os

    return _machine_device(os.environ.get("PATH", ""))


@functools.cache
def _machine_device(_path: str) -> tuple[Any, str]:
    from lfgen import launch
    from lfgen.catalogs.gpus import cpu_device, gpu_from_smi

    names = launch.gpu_names()
    if not names:
        return cpu_device(), "this machine's CPU (no --gpu, no GPU visible)"
    return gpu_from_smi(names[0]), f"this machine's {names[0]} (no --gpu)"


def machine_placement(written: WrittenConfig) -> Placement | None:
    """Where a run not started yet will train: its recipe's --gpu, else this machine (its first GPU, else the CPU)."""
    found = placement(written)
    if found is not None:
        return found
    gpu, source = machine_device()
    return Placement(gpu, 1, source) if gpu is not None else None


def estimate_written(written: WrittenConfig, where: Placement, price: float | None = None, *,
                     calibrated: bool = True) -> Any:
    """``lfgen.builder.timing.RunCost`` of *written* on *where* (calibrated when corrections are stored, unless not
    *calibrated*: what lfgen calibrate compares a run with)."""
    from lfgen.builder.timing import RunCost, estimate_config_time

    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")  # bad input stays an error, not a missing estimate
    try:
        return estimate_config_time(written.model, written.config, where.gpu, where.num_gpus, written.samples,
                                    written.lengths, price, calibrated=calibrated)
    except InputError as exc:  # a model lfgen does not know: no estimate, and the reason
        return RunCost(None, None, None, f"no time estimate: {str(exc).splitlines()[0]}", where.num_gpus)
