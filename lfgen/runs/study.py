"""The Optuna study of a tune experiment: ``experiments/<name>/study.db`` (SQLite), opened, checked, and its trials
as rows for tune, status, compare and report.

Optuna keeps neither the sampler nor the pruner in the database: lfgen tune makes them again from the experiment's
settings every time it opens the study (lfgen.tuning.strategies) and hands them to ``open_study``.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, StateError
from lfgen.layout import STUDY

STUDY_FILE = STUDY
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


def _storage(path: Path) -> Any:
    return optuna_module().storages.RDBStorage(f"sqlite:///{path.resolve()}")


def trial_count(folder: Path, name: str) -> int:
    """How many trials the study *name* in *folder* has (0 when it does not exist yet)."""
    path = folder / STUDY_FILE
    check_file(path)
    try:
        return len(optuna_module().load_study(study_name=name, storage=_storage(path)).trials)
    except KeyError:
        return 0


def open_study(folder: Path, name: str, *, direction: str, sampler: Any, pruner: Any) -> Any:
    """The experiment's study, created on first use, with the *sampler* and *pruner* its settings make."""
    path = folder / STUDY_FILE
    check_file(path)
    return optuna_module().create_study(study_name=name, storage=_storage(path), direction=direction,
                                        load_if_exists=True, sampler=sampler, pruner=pruner)


def run_name(number: int) -> str:
    return f"trial-{number:03d}"


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
    storage = _storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        return []
    return trial_rows(optuna.load_study(study_name=names[0], storage=storage))
