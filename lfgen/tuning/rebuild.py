"""A tune experiment's study rebuilt from its trials' runs: ``study.db`` moved away (broken, or deleted) or an older
copy put back.

Every trial the manifest lays out and the study lacks is added back, in order (trial-NNN is the study's trial N),
with the parameters its run was built from (its overrides, ``space.to_options`` undone) and the outcome its run had
(``state.sqlite`` and its output dir): a trained run is told its value, a failed or pruned one as such, with the
eval losses it logged; one without an outcome is added RUNNING, and the tuner then resumes it as it resumes a killed
tuner's trial. No finished run is trained again, and the sampler knows every trial before it proposes the next.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfgen.errors import StateError
from lfgen.layout import STATE
from lfgen.runs import study as studies
from lfgen.runs.metrics import lower_is_better, needs_eval
from lfgen.runs.metrics import value as metric_value
from lfgen.runs.ranking import finite
from lfgen.runs.reader import read_run, steps_logged
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow, read_rows
from lfgen.training.evaluate import is_scored
from lfgen.tuning import space as spaces


def rebuild(study: Any, experiment: Any, settings: dict[str, Any], root: Path, *, base_rank: int,
            grid: dict[str, list[Any]] | None, say: Callable[[str], None]) -> list[str]:
    """Add the trials of *experiment*'s runs that *study* lacks; returns their run names."""
    entries = {run.name: run for run in experiment.manifest.runs}
    rows = read_rows(experiment.path / STATE)
    path = experiment.path / studies.STUDY_FILE
    added = []
    number = len(study.trials)
    while (entry := entries.get(studies.run_name(number))) is not None:
        trial = _trial(entry, rows.get(entry.name), root / entry.output_dir, settings, base_rank, grid, path)
        with studies.guarded(path):
            study.add_trial(trial)
        added.append(entry.name)
        number += 1
    beyond = sorted(n for n in (_number(name) for name in entries) if n is not None and n > number)
    if beyond:
        raise StateError(f"{path}: the study has {number} trial(s) but {experiment.path}/experiment.yaml lays out "
                         f"{studies.run_name(beyond[0])} after a gap, so its runs cannot be added back in order; put "
                         "the study.db back, or tune under a new name (the runs stay in their output dirs)")
    if added:
        say(f"{path.name} lacked {len(added)} trial(s) the experiment's runs hold ({added[0]} to {added[-1]}); "
            "added back from their runs and outcomes")
    return added


def _trial(entry: Any, row: RunRow | None, out: Path, settings: dict[str, Any], base_rank: int,
           grid: dict[str, list[Any]] | None, path: Path) -> Any:
    """The frozen trial of one run: its parameters and outcome (see the module doc)."""
    optuna = studies.optuna_module()
    states = optuna.trial.TrialState
    space, metric = settings["space"], settings["metric"]
    params = spaces.from_options(entry.overrides, space, base_rank)
    missing = [key for key in space if key not in params]
    if missing:
        raise StateError(f"{path}: {entry.name} cannot be added back: its run's overrides lack {missing[0]} "
                         f"(experiment.yaml); {_fix_entry(entry)}")
    sign = 1 if lower_is_better(metric) else -1
    losses = read_run(out, max_points=None).eval_loss if out.is_dir() else None
    intermediate = {int(step): sign * loss for step, loss in zip(losses.steps, losses.values)} if losses else {}
    attrs: dict[str, Any] = {"steps": steps_logged(out) if out.is_dir() else 0}
    state, value = states.RUNNING, None  # no outcome yet: resumed by the tuner
    if row is not None and row.state is RunState.DONE:
        value = finite(metric_value(out, metric))
        if value is not None:
            state = states.COMPLETE
        elif not (needs_eval(metric) and not is_scored(out)):  # trained, unscored: RUNNING, evaluated on resume
            state, attrs["why"] = states.FAIL, f"no finite {metric} in {out}"
    elif row is not None and row.state is RunState.PRUNED:
        state = states.PRUNED
    elif row is not None and row.state is RunState.FAILED:
        state, attrs["why"] = states.FAIL, f"{row.reason}: {(row.detail or '').splitlines()[0] if row.detail else ''}"
    try:
        return optuna.trial.create_trial(params=params, distributions=spaces.distributions(space, grid), value=value,
                                         state=state, intermediate_values=intermediate, user_attrs=attrs)
    except ValueError as exc:  # a value its space does not hold
        raise StateError(f"{path}: {entry.name} cannot be added back ({exc}); {_fix_entry(entry)}") from None


def _number(name: str) -> int | None:
    prefix, _, digits = name.partition("-")
    return int(digits) if prefix == "trial" and digits.isdigit() else None


def _fix_entry(entry: Any) -> str:
    return f"put the study.db back, or tune under a new name (the run {entry.name} stays in its output dir)"
