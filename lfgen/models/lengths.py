"""Token-length distributions for the time model: how many tokens a micro-batch really holds.

The time of a step depends on the padded length of its batch (LlamaFactory pads each micro-batch to its
longest sample, rounded up to a multiple of 8), and the useful work on the real tokens. Both follow from
the distribution of sample lengths, which ``lfgen data`` summarises as p50 / p90 / p99 / max / mean
(``lfgen.builder.data_lengths.Lengths``). Sample lengths of instruction data are close to log-normal, so
a log-normal is matched to what is known: the median and the p90 when lfgen measured the data, or a
mean and standard deviation when that is what a source states, capped at the observed maximum. With
nothing known, every sample is taken at cutoff_len: an upper bound, and the caller says so.

Samples longer than cutoff_len are truncated to it (LlamaFactory); ``drop_over`` models tools that drop
them instead (swift 1.x's ``truncation_strategy: delete``), and the kept samples' lengths are then the
distribution below the cutoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_Z90 = 1.2815515655446004  # the standard normal's 90th percentile
_STEPS = 400  # integration points: the integrands are smooth, so the error is far below the model's


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True)
class LengthModel:
    """A log-normal of sample lengths (tokens), optionally capped at the longest sample seen.

    ``sigma == 0`` is a fixed length ``exp(mu)`` (packed sequences, random-token benchmarks)."""

    mu: float
    sigma: float
    longest: float | None = None  # no sample is longer (the data's measured max)
    drop_over: bool = False  # samples over the cutoff are dropped, not truncated
    source: str = ""

    @classmethod
    def fixed(cls, length: float, source: str = "") -> LengthModel:
        return cls(math.log(max(1.0, length)), 0.0, None, False, source)

    @classmethod
    def from_mean_sd(cls, mean: float, sd: float, longest: float | None = None, drop_over: bool = False,
                     source: str = "") -> LengthModel:
        """Match the log-normal's mean and standard deviation."""
        sigma2 = math.log(1.0 + (sd / mean) ** 2) if sd and mean > 0 else 0.0
        return cls(math.log(max(1.0, mean)) - sigma2 / 2, math.sqrt(sigma2), longest, drop_over, source)

    @classmethod
    def from_percentiles(cls, p50: float, p90: float, longest: float | None = None, source: str = "") -> LengthModel:
        """Match the median and the 90th percentile (what ``lfgen data`` measures)."""
        p50 = max(1.0, p50)
        sigma = max(0.0, math.log(max(p90, p50) / p50) / _Z90)
        return cls(math.log(p50), sigma, longest, False, source)

    def cdf(self, x: float) -> float:
        """P(length <= x) before any cutoff."""
        if self.longest is not None and x >= self.longest:
            return 1.0
        if x <= 0:
            return 0.0
        if self.sigma == 0:
            return 1.0 if x >= math.exp(self.mu) else 0.0
        return _phi((math.log(x) - self.mu) / self.sigma)

    def _kept_cdf(self, x: float, cutoff: float) -> float:
        """P(length <= x) of the samples a run keeps: truncated at the cutoff, or only those under it."""
        if x >= cutoff:
            return 1.0
        if self.drop_over:
            below = self.cdf(cutoff)
            return self.cdf(x) / below if below > 0 else 1.0
        return self.cdf(x)

    def kept_share(self, cutoff: float) -> float:
        """The share of samples a run keeps (1 unless over-long samples are dropped)."""
        return self.cdf(cutoff) if self.drop_over else 1.0

    def _integral(self, cutoff: float, power: int) -> float:
        """E[min(max of `power` samples, cutoff)] = integral over [0, cutoff] of 1 - F(x)^power."""
        if self.sigma == 0:
            return min(math.exp(self.mu), cutoff, self.longest or math.inf)
        top = min(cutoff, self.longest or math.inf, math.exp(self.mu + 8 * self.sigma))
        start = min(1.0, top)  # below one token F is 0: that stretch adds its own length
        if top <= start:
            return top
        # Simpson's rule in log space (x = e^u): the integrand is smooth there for any spread
        h = (math.log(top) - math.log(start)) / _STEPS
        total = 0.0
        for i in range(_STEPS + 1):
            x = start * math.exp(i * h)
            weight = 1 if i in (0, _STEPS) else (4 if i % 2 else 2)
            total += weight * (1.0 - self._kept_cdf(x, cutoff) ** power) * x
        return start + total * h / 3

    def mean(self, cutoff: float) -> float:
        """Mean real tokens of a kept sample."""
        return self._integral(cutoff, 1)

    def batch_max(self, batch: int, cutoff: float) -> float:
        """Expected longest sample of a micro-batch of *batch* samples: the length the batch is padded to."""
        return self._integral(cutoff, max(1, batch))

    def batch_max_quantiles(self, batch: int, cutoff: float, points: int) -> list[float]:
        """*points* equally likely values of a micro-batch's longest sample (the padded length's distribution).

        The step time is not linear in the padded length (attention grows with its square; short batches hit the
        CPU's floor), so the mean step time is the mean over this distribution, not the time of the mean length.
        The longest of *batch* samples is below x with probability F(x)^batch: its quantile q is the single
        sample's quantile q^(1/batch)."""
        if self.sigma == 0:
            return [min(math.exp(self.mu), cutoff, self.longest or math.inf)] * points
        below = self.cdf(cutoff) if self.drop_over else 1.0
        out = []
        for i in range(points):
            p = ((i + 0.5) / points) ** (1.0 / max(1, batch)) * below
            x = math.exp(self.mu + self.sigma * NormalDist().inv_cdf(min(p, 1 - 1e-12)))
            out.append(min(x, cutoff, self.longest or math.inf))
        return out

    def to_json(self) -> dict[str, float | str | None]:
        return {"median": round(math.exp(self.mu), 1), "sigma": round(self.sigma, 3), "longest": self.longest,
                "source": self.source}
