"""How far a peak-memory estimate is from what a run shows: the range measured on published peaks.

The memory model is a point estimate; its error depends most on whether the batches vary in length
(real data padded per batch: the caching allocator holds what shorter batches freed) or not (fixed
shapes, packing). ``presets/memory_range.yaml`` holds, per regime, the 10th and 90th percentile of
measured / estimated over published peaks that were never fitted (``python benchmarks/memory_reference.py
--range`` derives and checks them, ``--write`` stores them), so the range is data, not a guess, and a test
keeps it equal to what the reference set gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfgen.resources import load_data

REGIMES = ("fixed", "variable")


def regime(variable_lengths: bool) -> str:
    """The range's regime of a run: ``variable`` for real data padded per batch, ``fixed`` otherwise."""
    return "variable" if variable_lengths else "fixed"


@dataclass(frozen=True)
class PeakRange:
    """The estimate times the regime's low and high ratio: for the peak and for what must fit."""

    low: float  # ratios of measured to estimated
    high: float
    peak_gib: float
    fit_gib: float
    regime: str
    rows: int

    @property
    def basis(self) -> str:
        what = "real data padded per batch" if self.regime == "variable" else "fixed shapes or packed batches"
        return (f"{self.low:g}x to {self.high:g}x of the estimate: the 10th-90th percentile of measured / estimated "
                f"over {self.rows} published peaks of runs with {what}, none of them fitted to (docs/estimates.md)")

    def to_json(self) -> dict[str, object]:
        return {"low": round(self.peak_gib * self.low, 2), "high": round(self.peak_gib * self.high, 2),
                "fit_low": round(self.fit_gib * self.low, 2), "fit_high": round(self.fit_gib * self.high, 2),
                "ratio_low": self.low, "ratio_high": self.high, "regime": self.regime, "basis": self.basis}


def peak_range(peak_gib: float, fit_gib: float, variable_lengths: bool) -> PeakRange:
    """The range of the peak nvidia-smi shows and of what must fit, for estimates of *peak_gib* and *fit_gib*.

    The ratios were measured on peaks; applying them to what must fit (the peak less the cache the allocator
    releases before an out-of-memory) assumes the error is spread like the estimate."""
    name = regime(variable_lengths)
    band = load_data("memory_range.yaml")["regimes"][name]
    return PeakRange(band["low"], band["high"], peak_gib, fit_gib, name, band["rows"])
