"""How lfgen tune searches: its samplers and pruners, by the names ``--sampler`` and ``--pruner`` take.

Optuna keeps neither in the study (lfgen.runs.study), so they are made again from the experiment's settings every
time the study is opened. The sampler's seed is the study seed plus the number of trials so far: a fresh study is
reproducible, and a resumed one does not repeat earlier proposals. Optuna is imported only when one is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.runs import study as studies
from lfgen.runs.metrics import lower_is_better

SAMPLERS = ("tpe", "random", "grid")  # the one list: --sampler's choices and the check of a study's settings
PRUNERS = ("asha", "median", "none")  # likewise --pruner's


def sampler(name: str, seed: int) -> Any:
    optuna = studies.optuna_module()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    # grid: every point is enqueued once (the tuner), drawn in order. Optuna's GridSampler calls study.stop() when
    # the grid runs out, which ask-and-tell refuses (RuntimeError outside optimize).
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(name: str, min_resource: int) -> Any:
    """ASHA: Optuna's SuccessiveHalvingPruner, its first rung at the first eval step; median: MedianPruner."""
    optuna = studies.optuna_module()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, min_resource), reduction_factor=2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_study(folder: Path, name: str, settings: dict[str, Any], min_resource: int) -> Any:
    """The experiment's study with the sampler and pruner its *settings* name, the same every time it is opened."""
    count = studies.trial_count(folder, name)
    return studies.open_study(folder, name, direction="minimize" if lower_is_better(settings["metric"]) else "maximize",
                              sampler=sampler(settings["sampler"], settings["seed"] + count),
                              pruner=pruner(settings["pruner"], min_resource))
