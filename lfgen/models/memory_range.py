"""How far a peak-memory estimate is from what a run shows: the range measured on published peaks.

The memory model is a point estimate. ``presets/memory_range.yaml`` holds the 10th and 90th percentile of
measured / estimated over every published peak in benchmarks/memory_reference.yaml that no constant was
fitted to (``python benchmarks/memory_reference.py --range`` derives it, ``--write`` stores it), so the range
is data, not a guess, and a test keeps it equal to what the reference set gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfgen.resources import load_data


@dataclass(frozen=True)
class PeakRange:
    """The estimate times the low and high ratio: for the peak and for what must fit."""

    low: float  # ratios of measured to estimated
    high: float
    rows: int  # the published peaks they come from
    peak_gib: float
    fit_gib: float

    @property
    def fit_high(self) -> float:
        """What must fit at the range's high end."""
        return self.fit_gib * self.high

    @property
    def basis(self) -> str:
        return (f"{self.low:g}x to {self.high:g}x of the estimate: the 10th-90th percentile of measured / estimated "
                f"over {self.rows} published peaks the model was not fitted to (docs/estimates.md)")

    def to_json(self) -> dict[str, object]:
        return {"low": round(self.peak_gib * self.low, 2), "high": round(self.peak_gib * self.high, 2),
                "fit_low": round(self.fit_gib * self.low, 2), "fit_high": round(self.fit_high, 2),
                "ratio_low": self.low, "ratio_high": self.high, "basis": self.basis}


def peak_range(peak_gib: float, fit_gib: float) -> PeakRange:
    """The range of the peak nvidia-smi shows and of what must fit, for estimates of *peak_gib* and *fit_gib*.

    The ratios were measured on peaks; applying them to what must fit (the peak less the cache the allocator
    releases before an out-of-memory) assumes the error is spread like the estimate."""
    band = load_data("memory_range.yaml")
    return PeakRange(band["low"], band["high"], band["rows"], peak_gib, fit_gib)
