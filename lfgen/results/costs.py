"""compare's ``gpu_hours``, ``cost`` and ``price_source`` of a run: what it used, measured, and what that cost.

GPU-hours are the run's wall time x its GPUs from the experiment's event log (lfgen.runs.spend: every attempt and
evaluation, start-up included) when lfgen run trained it; for a run directory lfgen did not run, the trainer's own
train_runtime + eval_runtime x its GPUs (its lfgen_env.json, else one), which leaves out start-up and model
loading. The cost is GPU-hours x the price of the GPU it trained on (its lfgen_env.json: a GPU of the catalog, or
the CPU) from --price, the user's prices file or the dated default table (lfgen.catalogs.prices); no price, no cost.
"""

from __future__ import annotations

from typing import Any

from lfgen.runs.parsing import to_float
from lfgen.runs.reader import RunData
from lfgen.runs.spend import Spend, devices


def device_name(run: RunData) -> str | None:
    """The catalog name of what the run trained on: ``CPU``, a GPU nvidia-smi named, or None when unknown."""
    from lfgen.catalogs.gpus import gpu_from_smi

    environment = run.environment
    if environment.get("device") == "cpu":
        return "CPU"
    gpus = environment.get("gpus") or []
    card = gpu_from_smi(gpus[0]) if gpus else None
    return card.name if card is not None else None


def gpu_hours(run: RunData, spend: Spend | None) -> float | None:
    """Measured GPU-hours: the event log's wall time when lfgen run recorded the run, else the trainer's runtime."""
    if spend is not None and spend.attempts:
        return spend.gpu_hours
    runtime = run.runtime_s
    if runtime is None:
        return None
    evaluation = to_float(run.results.get("eval_runtime")) or 0.0
    return (runtime + evaluation) * devices(run.environment) / 3600


class Prices:
    """The price of each device once per comparison (the user's prices file is read once)."""

    def __init__(self, override: float | None = None):
        self.override, self.known = override, {}

    def of(self, device: str | None) -> Any:
        from lfgen.catalogs.prices import Price, price_for

        if self.override is not None:
            return Price(self.override, "--price")
        if device is None:
            return None
        if device not in self.known:
            self.known[device] = price_for(device)
        return self.known[device]


def cost(run: RunData, hours: float | None, prices: Prices) -> tuple[float | None, str | None]:
    """(USD, where the price came from) of *hours* on the run's device; (None, None) without a price."""
    price = prices.of(device_name(run))
    if price is None or hours is None:
        return None, None
    return round(hours * price.usd_per_gpu_hour, 4), f"{price.usd_per_gpu_hour:g} USD/GPU-h: {price.source}"
