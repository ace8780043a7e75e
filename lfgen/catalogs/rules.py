"""The rule registry (``presets/rules.yaml``) and the table lookups rules make.

The decisions themselves are made in ``lfgen.builder.steps``; this module only answers
"what does rule X say for this input", so every number lives in the data file.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from dataclasses import dataclass, field

from lfgen.resources import load_data


@dataclass(frozen=True)
class Rule:
    """One rule of the registry; ``tables`` holds its data (bands, tiers, ...)."""

    id: str
    title: str
    seeds: tuple[str, ...]
    says: str
    lfgen: str
    tables: dict[str, Any] = field(default_factory=dict)
    # Published evidence beyond the seeds (RULES.md §7-8): a paper, a recipe file, a LlamaFactory source file.
    sources: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The seeds, then the first published source, as a decision names them."""
        parts = [f"seed {s}" for s in self.seeds] + list(self.sources[:1])
        return ", ".join(parts) if parts else "lfgen"

    def table(self, name: str) -> Any:
        return self.tables[name]


@functools.cache
def registry() -> dict[str, Rule]:
    rules = {}
    for rule_id, body in load_data("rules.yaml")["rules"].items():
        body = dict(body)
        text = {key: body.pop(key) for key in ("title", "says", "lfgen")}
        rules[rule_id] = Rule(id=rule_id, seeds=tuple(body.pop("seeds")), sources=tuple(body.pop("sources", ())),
                              tables=body, **text)
    return rules


def rule(rule_id: str) -> Rule:
    return registry()[rule_id]


def band(rule_id: str, samples: int) -> dict[str, Any]:
    """The row of a data-size rule's band table that holds *samples*."""
    for row in rule(rule_id).table("bands"):
        if row["upto"] is None or samples <= row["upto"]:
            return row
    raise AssertionError(f"{rule_id}: bands do not end with an open row")


def batch_for(memory_gb: float, num_gpus: int) -> tuple[int, int, str]:
    """R-HW-BATCH: (micro-batch, accumulation, tier label) for one GPU size and count."""
    spec = rule("R-HW-BATCH")
    target, most = spec.table("effective_batch")["target"], spec.table("effective_batch")["max"]
    tier = next(t for t in spec.table("tiers") if memory_gb >= t["min_gb"])
    micro = tier["micro"]
    if micro * num_gpus > most:  # many GPUs: shrink the micro-batch before passing the 64 ceiling
        micro = max(1, most // num_gpus)
    accumulation = max(1, math.ceil(target / (micro * num_gpus)))
    return micro, accumulation, tier["label"]


def effective_batch_range() -> tuple[int, int]:
    eff = rule("R-HW-BATCH").table("effective_batch")
    return eff["target"], eff["max"]


def headroom(percent: float | None = None) -> float:
    """R-HW-HEADROOM: the share of GPU memory a fitted run leaves free (the one place it is read);
    *percent* is the user's override (--headroom 10 keeps 10% free)."""
    if percent is not None:
        return float(percent) / 100
    return float(rule("R-HW-HEADROOM").table("headroom"))
