"""An experiment's GPU-hours and cost before it runs: each run's time estimate (lfgen.builder.timing), summed.

``lfgen sweep --dry-run`` shows it for the runs it would write, ``lfgen tune --dry-run`` for its trials (each
estimated as the base config, x the trials: pruning can only lower it). Each run is timed on the GPU it was built
for (``--gpu``); without one, on this machine (its first GPU nvidia-smi lists, else the CPU), which the plan says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PlanCost:
    """Each run's estimate and the experiment's total; runs without an estimate are listed with the reason."""

    runs: list[tuple[str, Any]] = field(default_factory=list)  # (name, lfgen.builder.timing.RunCost)
    device: str = ""  # what the runs are timed on, and how lfgen knows
    copies: int = 1  # lfgen tune: every trial is estimated as the base, once per trial

    @property
    def known(self) -> list[tuple[str, Any]]:
        return [(name, cost) for name, cost in self.runs if cost.time is not None]

    @property
    def missing(self) -> list[tuple[str, str]]:
        return [(name, cost.note) for name, cost in self.runs if cost.time is None]

    def _sum(self, part: Any) -> float:
        return self.copies * sum(part(cost) for _, cost in self.known)

    @property
    def gpu_hours(self) -> float:
        return self._sum(lambda c: c.gpu_hours)

    @property
    def low_gpu_hours(self) -> float:
        return self._sum(lambda c: c.time["low_s"] * c.num_gpus / 3600)

    @property
    def high_gpu_hours(self) -> float:
        return self._sum(lambda c: c.time["high_s"] * c.num_gpus / 3600)

    @property
    def usd(self) -> float | None:
        """The cost of every run with a price; None when no run has one."""
        priced = [cost.cost["usd"] for _, cost in self.known if cost.cost is not None]
        return self.copies * sum(priced) if priced else None

    @property
    def prices(self) -> list[str]:
        """Each distinct price with where it came from (``$2.5 per GPU-hour (Modal pricing, ...)``)."""
        seen = {f"${c.cost['usd_per_gpu_hour']:g} per GPU-hour ({c.cost['price_source']})"
                for _, c in self.known if c.cost is not None}
        return sorted(seen)

    @property
    def unpriced(self) -> list[str]:
        return list(dict.fromkeys(cost.note for _, cost in self.known if cost.cost is None and cost.note))

    def to_json(self) -> dict[str, Any]:
        return {"gpu_hours": round(self.gpu_hours, 4), "low_gpu_hours": round(self.low_gpu_hours, 4),
                "high_gpu_hours": round(self.high_gpu_hours, 4), "usd": None if self.usd is None else round(self.usd, 2),
                "device": self.device, "copies": self.copies, "prices": self.prices,
                "runs": [{"run": name, "time": cost.time, "cost": cost.cost,
                          "gpu_hours": None if cost.gpu_hours is None else round(cost.gpu_hours, 4),
                          "note": cost.note or None} for name, cost in self.runs]}


def plan_cost(built: list[tuple[str, Any]], price: float | None = None, copies: int = 1) -> PlanCost:
    """The estimate of every (name, Build) in *built*, each on its --gpu or, without one, on this machine."""
    from lfgen.builder.run_estimate import machine_device
    from lfgen.builder.timing import RunCost, estimate_config_time
    from lfgen.errors import InputError

    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")  # bad input stays an error, never a missing estimate
    plan = PlanCost(copies=copies)
    fallback: tuple[Any, str] | None = None
    devices = []
    for name, result in built:
        hardware = result.hardware
        if hardware is None:
            fallback = fallback or machine_device()
            gpu, where = fallback
        else:
            gpu, where = hardware.gpu, hardware.gpu.name
        num_gpus = result.options.num_gpus
        model = str(result.config.get("model_name_or_path", ""))
        try:
            cost = estimate_config_time(model, result.config, gpu, num_gpus, result.samples, result.lengths, price)
        except InputError as exc:  # a model lfgen does not know: a missing estimate, never a failed plan
            cost = RunCost(None, None, None, f"no time estimate: {str(exc).splitlines()[0]}", num_gpus)
        plan.runs.append((name, cost))
        devices.append(f"{num_gpus} x {where}" if num_gpus > 1 else where)
    plan.device = ", ".join(dict.fromkeys(d for d in devices if d))
    return plan
