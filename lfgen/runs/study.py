"""The Optuna study of a tune experiment: ``experiments/<name>/study.db`` (SQLite), opened, checked, and its trials
as rows for tune, status, compare and report.

Optuna keeps neither the sampler nor the pruner in the database: lfgen tune makes them again from the experiment's
settings every time it opens the study (lfgen.tuning.strategies) and hands them to ``open_study``.

A study file that Optuna could not read (not SQLite, cut short, another Optuna's schema, a damaged value, a folder
or a FIFO in its place) is one StateError naming the file and how to rebuild it, before Optuna opens it; a write
that fails (a full disk) is one StateError too, never Optuna's StorageInternalError.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, StateError
from lfgen.layout import STUDY
from lfgen.runs import dbfile

STUDY_FILE = STUDY
BUDGET_STOP = "budget_stop"  # the study's user attribute lfgen tune --budget writes when it lets no trial start
_TABLES = {"studies", "trials", "trial_values", "trial_intermediate_values", "trial_params"}
# Each column Optuna reads back, and what it must hold (SQL over the row; true when the value is damaged).
_VALUES = (
    ("trials", "state", "state NOT IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL', 'WAITING')"),
    ("trials", "number", "typeof(number) NOT IN ('integer', 'null')"),
    ("trials", "datetime_start", "datetime_start IS NOT NULL AND julianday(datetime_start) IS NULL"),
    ("trials", "datetime_complete", "datetime_complete IS NOT NULL AND julianday(datetime_complete) IS NULL"),
    ("trial_values", "value", "typeof(value) NOT IN ('real', 'integer', 'null')"),
    ("trial_values", "value_type", "value_type NOT IN ('FINITE', 'INF_POS', 'INF_NEG')"),
    ("trial_intermediate_values", "intermediate_value", "typeof(intermediate_value) NOT IN ('real', 'integer', 'null')"),
    ("trial_intermediate_values", "intermediate_value_type",
     "intermediate_value_type NOT IN ('FINITE', 'INF_POS', 'INF_NEG', 'NAN')"),
    ("trial_intermediate_values", "step", "typeof(step) != 'integer'"),
    ("trial_params", "param_value", "typeof(param_value) NOT IN ('real', 'integer')"),
    ("trial_params", "distribution_json", "NOT json_valid(distribution_json)"),
    ("trial_user_attributes", "value_json", "NOT json_valid(value_json)"),
    ("trial_system_attributes", "value_json", "NOT json_valid(value_json)"),
    ("study_user_attributes", "value_json", "NOT json_valid(value_json)"),
    ("study_system_attributes", "value_json", "NOT json_valid(value_json)"),
    ("study_directions", "direction", "direction NOT IN ('NOT_SET', 'MINIMIZE', 'MAXIMIZE')"),
)


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


def _fix(path: Path) -> str:
    name = path.parent.name
    return (f"move it away (mv {shlex.quote(str(path))} {shlex.quote(f'{path}.broken')}); lfgen tune {name} then "
            "rebuilds the study from the trials' runs (each finished run told with its value, the others resumed), "
            f"and lfgen status, compare and report read {name} without it")


def broken(path: Path, why: str) -> StateError:
    """The StateError of an unusable study file: the file, what is wrong, how to rebuild it."""
    return StateError(f"{path}: not a usable Optuna study ({why}); {_fix(path)}")


def check_file(path: Path) -> None:
    """A study file from before must be a whole SQLite database with Optuna's tables, each value of the kind Optuna
    reads back; else one StateError (nothing is opened for writing, nothing changed)."""
    found = dbfile.problem(path)
    if found is not None:
        raise StateError(f"{found[0]}: not a usable Optuna study ({found[1]}); {_fix(path)}")
    if not path.exists():
        return
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            ok = db.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            damaged = _damaged(db, tables) if ok and ok[0] == "ok" and _TABLES <= tables else None
    except sqlite3.DatabaseError as exc:
        raise broken(path, str(exc)) from None
    if not ok or ok[0] != "ok":
        raise broken(path, f"damaged: {ok[0] if ok else 'no answer'}")
    if not _TABLES <= tables:
        raise broken(path, f"not an Optuna study: missing tables {', '.join(sorted(_TABLES - tables))}")
    if damaged:
        raise broken(path, damaged)


def _damaged(db: sqlite3.Connection, tables: set[str]) -> str | None:
    """The first value Optuna could not read back (its table, row and column), or None."""
    for table, column, bad in _VALUES:
        if table not in tables:
            continue
        try:
            row = db.execute(f"SELECT rowid, quote({column}) FROM {table} WHERE {bad} LIMIT 1").fetchone()
        except sqlite3.OperationalError as exc:  # a column missing: another schema
            return f"{table}.{column}: {exc}"
        if row is not None:
            return f"a damaged value: {table} row {row[0]}, {column} = {str(row[1])[:60]}"
    return None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write to the study that fails (a full disk, a read-only file) as one StateError, not Optuna's
    StorageInternalError (which blames "invalid data" for any failed commit)."""
    from optuna.exceptions import StorageInternalError

    try:
        yield
    except StorageInternalError as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0][:200]
        if "full" in cause:
            raise StateError(f"{path}: the study cannot be written: the disk is full ({cause}); free space, then "
                             f"lfgen tune {path.parent.name} resumes it (the trials' runs are kept)") from None
        raise StateError(f"{path}: the study cannot be written ({cause}); check the file and its folder, then "
                         f"lfgen tune {path.parent.name} resumes it") from None


@contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Optuna's errors about the study file as one StateError: another Optuna's schema (its RuntimeError), a value
    it cannot turn back into a trial, a write that fails (``writing``)."""
    try:
        with writing(path):
            yield
    except RuntimeError as exc:
        if "compatible" not in str(exc) and "schema" not in str(exc):
            raise
        raise broken(path, f"written by another Optuna version: {str(exc).split('.')[0]}") from None
    except (ValueError, KeyError, IndexError, TypeError, LookupError) as exc:
        raise broken(path, f"a damaged value Optuna cannot read back: {type(exc).__name__}: {str(exc)[:200]}") from None


def verify(path: Path) -> None:
    """``check_file``, and where Optuna is installed the study's schema against this Optuna's: for commands that
    read no trial (lfgen status) but say, as tune would, that the study cannot be used. Writes nothing."""
    import importlib.util

    check_file(path)
    if os.path.lexists(path) and importlib.util.find_spec("optuna") is not None:
        _storage(path).engine.dispose()


def _storage(path: Path) -> Any:
    """Optuna's storage on *path*; a study of another Optuna's schema is refused before Optuna adds or reads a
    table (it would create the tables a newer schema has, and then refuse the file in a traceback)."""
    optuna = optuna_module()
    existed = path.is_file() and path.stat().st_size > 0
    with guarded(path):
        storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}", skip_table_creation=existed,
                                             skip_compatibility_check=True)
        current, head = (storage.get_current_version(), storage.get_head_version()) if existed else (None, None)
    if current != head:
        upgrade = (f"; or upgrade it (optuna storage upgrade --storage sqlite:///{path.resolve()})"
                   if current in storage.get_all_versions() else "")
        raise StateError(f"{path}: not a usable Optuna study (written by another Optuna version: its schema is "
                         f"{current}, Optuna {optuna.__version__} here reads {head}); {_fix(path)}{upgrade}")
    return storage


def trial_count(folder: Path, name: str) -> int:
    """How many trials the study *name* in *folder* has (0 when it does not exist yet)."""
    path = folder / STUDY_FILE
    check_file(path)
    storage = _storage(path)
    with guarded(path):
        try:
            return len(optuna_module().load_study(study_name=name, storage=storage).trials)
        except KeyError:
            return 0


def open_study(folder: Path, name: str, *, direction: str, sampler: Any, pruner: Any) -> Any:
    """The experiment's study, created on first use, with the *sampler* and *pruner* its settings make."""
    path = folder / STUDY_FILE
    check_file(path)
    storage = _storage(path)
    with guarded(path):
        study = optuna_module().create_study(study_name=name, storage=storage, direction=direction,
                                             load_if_exists=True, sampler=sampler, pruner=pruner)
        trial_rows(study)  # every trial read back once: a value Optuna cannot turn into a trial is said here
    return study


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
    stop = study.user_attrs.get(BUDGET_STOP) or {}
    rows = []
    for trial in study.trials:
        if trial.state.name == "WAITING":  # enqueued, not asked yet (a grid point, a full disk's retry): no trial yet
            continue
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name,
                                                                                    trial.state.name.lower())
        losses = {step: sign * value for step, value in sorted(trial.intermediate_values.items())}
        why = trial.user_attrs.get("why")
        if state == "pruned" and why is None and losses:
            step = max(losses)
            why = f"pruned at step {step} (eval_loss {losses[step]:.4g})"
        if state == "running" and stop.get("trial") == run_name(trial.number):
            why = ("interrupted: the budget was spent while it trained (it resumes from its checkpoint first when the "
                   "study goes on)" if stop.get("interrupted") else
                   "waiting: the budget stopped the study before it (it starts first when the study goes on)")
        rows.append({"number": trial.number, "run": run_name(trial.number), "state": state, "params": trial.params,
                     "value": trial.value if trial.values and state == "complete" else None,
                     "steps": trial.user_attrs.get("steps"), "why": why, "intermediate": losses})
    return rows


def load_rows(folder: Path) -> list[dict[str, Any]] | None:
    """The trial rows of a tune experiment's study, None when the folder has no study (a sweep)."""
    path = folder / STUDY_FILE
    if not os.path.lexists(path):
        return None
    check_file(path)
    optuna = optuna_module()
    storage = _storage(path)
    with guarded(path):
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if not names:
            return []
        return trial_rows(optuna.load_study(study_name=names[0], storage=storage))


def budget_stop(folder: Path) -> dict[str, Any] | None:
    """Why lfgen tune --budget last stopped the study in *folder* (its figures and message), None when it did not
    (or went on since)."""
    path = folder / STUDY_FILE
    if not path.exists():
        return None
    check_file(path)
    optuna = optuna_module()
    storage = _storage(path)
    with guarded(path):
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if not names:
            return None
        stop = optuna.load_study(study_name=names[0], storage=storage).user_attrs.get(BUDGET_STOP)
    return stop if isinstance(stop, dict) else None
