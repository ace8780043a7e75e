"""The Optuna study of a tune experiment: ``experiments/<name>/study.db`` (SQLite), its sampler and pruner, and
its trials as rows for status, compare and report.

The sampler and pruner are not stored in the database (Optuna keeps neither), so they are made again from the
experiment's settings every time the study is opened. The sampler's seed is the study seed plus the number of
trials so far: a fresh study is reproducible, and a resumed one does not repeat earlier proposals.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, StateError
from lfgen.layout import STUDY, TRAINER_LOG
from lfgen.runs.ranking import lower_is_better

STUDY_FILE = STUDY
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("asha", "median", "none")
_TABLES = {"studies", "trials", "trial_values", "trial_intermediate_values", "trial_params"}


def optuna_module() -> Any:
    """Optuna, imported on first use (an extra: ``pip install 'lfgen[tune]'``)."""
    try:
        import optuna
    except ImportError:
        raise InputError("lfgen tune needs Optuna: pip install 'lfgen[tune]' (or pip install 'optuna>=5,<6')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*is already reported.*")
    return optuna


def check_file(path: Path) -> None:
    """A study file from before must be a whole SQLite database with Optuna's tables; else one StateError."""
    if not path.exists():
        return
    fix = (f"move it away (mv {path} {path}.broken) to start the study afresh; the finished runs stay in "
           "outputs/ and are compared as usual")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            ok = db.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a usable Optuna study ({exc}); {fix}") from None
    if not ok or ok[0] != "ok":
        raise StateError(f"{path}: the study database is damaged ({ok[0] if ok else 'no answer'}); {fix}")
    if not _TABLES <= tables:
        raise StateError(f"{path}: not an Optuna study (missing tables {', '.join(sorted(_TABLES - tables))}); {fix}")


def sampler(name: str, seed: int, grid_values: dict[str, list[Any]] | None) -> Any:
    optuna = optuna_module()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # grid: every point is enqueued once (tuner), drawn in order. Optuna's GridSampler calls study.stop() when the
    # grid runs out, which ask-and-tell refuses (RuntimeError outside optimize).
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(name: str, min_resource: int) -> Any:
    """ASHA: Optuna's SuccessiveHalvingPruner, its first rung at the first eval step; median: MedianPruner."""
    optuna = optuna_module()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, min_resource), reduction_factor=2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_study(folder: Path, name: str, settings: dict[str, Any], grid_values: dict[str, list[Any]] | None,
               min_resource: int) -> Any:
    """The experiment's study, created on first use; the same sampler and pruner every time."""
    optuna = optuna_module()
    path = folder / STUDY_FILE
    check_file(path)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    try:
        count = len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        count = 0
    direction = "minimize" if lower_is_better(settings["metric"]) else "maximize"
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=sampler(settings["sampler"], settings["seed"] + count, grid_values),
                                pruner=pruner(settings["pruner"], min_resource))
    return study


def run_name(number: int) -> str:
    return f"trial-{number:03d}"


def steps_run(output_dir: Path) -> int:
    """Optimizer steps a run logged (its last ``loss`` line in trainer_log.jsonl); 0 when it logged none."""
    steps = 0
    try:
        lines = (output_dir / TRAINER_LOG).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "loss" in record and isinstance(record.get("current_steps"), int):
            steps = max(steps, record["current_steps"])
    return steps


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, run, state (complete / pruned / failed / running), params, value, steps, why,
    and the intermediate values (step -> eval loss) the pruner saw.

    The value is the metric of a complete trial, None otherwise: a pruned trial has only eval losses (Optuna gives
    it the last one as its value, which in a study of a score is a negated loss), so its why says where it
    stopped. A score study reports each eval loss negated (so the pruner ranks in the study's direction); the
    rows give them back as the losses they are."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    rows = []
    for trial in study.trials:
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name,
                                                                                    trial.state.name.lower())
        losses = {step: sign * value for step, value in sorted(trial.intermediate_values.items())}
        why = trial.user_attrs.get("why")
        if state == "pruned" and why is None and losses:
            step = max(losses)
            why = f"pruned at step {step} (eval_loss {losses[step]:.4g})"
        rows.append({"number": trial.number, "run": run_name(trial.number), "state": state, "params": trial.params,
                     "value": trial.value if trial.values and state == "complete" else None,
                     "steps": trial.user_attrs.get("steps"), "why": why, "intermediate": losses})
    return rows


def load_rows(folder: Path) -> list[dict[str, Any]] | None:
    """The trial rows of a tune experiment's study, None when the folder has no study (a sweep)."""
    path = folder / STUDY_FILE
    if not path.exists():
        return None
    check_file(path)
    optuna = optuna_module()
    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        return []
    return trial_rows(optuna.load_study(study_name=names[0], storage=storage))
