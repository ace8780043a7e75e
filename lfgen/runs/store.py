"""Run state of one experiment: an SQLite database (WAL), ``state.sqlite``.

Every change is one transaction, so a crash of lfgen (even kill -9) leaves each run either before or after a
change, never half-recorded. A run changes state only through ``Store.transition``: the row, its timestamps and
its event in one transaction, and only along the moves ``lfgen.runs.states.MOVES`` allows. One runner holds the
experiment's lock (lfgen.runs.lock) while it writes here.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, StateError
from lfgen.runs.states import EvalState, RunState, allowed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, output_dir TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', reason TEXT, detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, oom_retries INTEGER NOT NULL DEFAULT 0,
    command TEXT, gpus TEXT, pid INTEGER, pgid INTEGER, runner_pid INTEGER,
    started REAL, ended REAL, updated REAL, position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    run TEXT PRIMARY KEY, state TEXT NOT NULL, started REAL, ended REAL, detail TEXT, options TEXT
);
"""


@dataclass
class RunRow:
    name: str
    config: str
    output_dir: str
    state: RunState
    reason: str | None
    detail: str | None
    attempts: int
    oom_retries: int
    command: str | None
    gpus: str | None
    pid: int | None
    pgid: int | None
    runner_pid: int | None
    started: float | None
    ended: float | None
    updated: float | None
    position: int

    def __post_init__(self) -> None:
        self.state = RunState(self.state)  # ValueError for a state lfgen never writes (Store._check refuses those)


class Store:
    """The runs table and the event log of one experiment.

    A state file that is not SQLite, is cut short or lacks lfgen's tables is a StateError naming the file
    and how to start over; lfgen never writes to it.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        existed = path.exists() and path.stat().st_size > 0
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit transactions below
        try:
            with self._guard():
                self._open(existed)
        except BaseException:
            self.db.close()
            raise

    def _open(self, existed: bool) -> None:
        if existed:
            self._check()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def _check(self) -> None:
        """A state file from before: whole (quick_check) and holding lfgen's tables with their columns."""
        problems = [row[0] for row in self.db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"damaged ({problems[0]})")
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in ("runs", "events") if t not in tables]
        if missing:
            raise sqlite3.DatabaseError(f"has no {' or '.join(missing)} table")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        lacking = [f.name for f in fields(RunRow) if f.name not in columns]
        if lacking:
            raise sqlite3.DatabaseError(f"its runs table lacks {', '.join(lacking)}")
        unknown = [row[0] for row in self.db.execute("SELECT DISTINCT state FROM runs")
                   if row[0] not in RunState._value2member_map_]
        if unknown:
            raise sqlite3.DatabaseError(f"its runs table holds a state lfgen never writes ({unknown[0]!r}; "
                                        f"lfgen writes {', '.join(RunState)})")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """sqlite3's errors about the file itself become one StateError (a busy database stays an error of its own)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StateError(f"{self.path}: the run state is busy ({exc}); another lfgen is writing it, "
                                 "try again when it has finished") from None
            raise self._broken(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise self._broken(str(exc)) from None

    def _broken(self, why: str) -> StateError:
        move = f"mv {shlex.quote(str(self.path))} {shlex.quote(f'{self.path}.broken')}"
        return StateError(f"{self.path}: not a usable lfgen run state ({why}); move it away ({move}) and "
                          "lfgen run starts a new state: runs whose output dirs hold their finished results "
                          "(lfgen_run.yaml matching the run's config, and all_results.json) are recorded as done, "
                          "the others train again")

    def close(self) -> None:
        self.db.close()

    @classmethod
    def verify(cls, path: Path) -> None:
        """Raise the StateError of a broken state file at *path* without creating or writing anything (before a
        runner takes its lock: bad state is bad input, and bad input leaves no file behind)."""
        if not path.is_file() or path.stat().st_size == 0:
            return
        store = cls.__new__(cls)
        store.path = path
        store.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            with store._guard():
                store._check()
        finally:
            store.db.close()

    def _tx(self, sql: str, params: tuple | dict = ()) -> None:
        with self._guard(), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, params)

    def sync_runs(self, runs: list[tuple[str, str, str]]) -> None:
        """Make the table list these (name, config, output_dir); new runs are pending, known ones kept."""
        with self._guard(), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for position, (name, config, output_dir) in enumerate(runs):
                self.db.execute(
                    "INSERT INTO runs (name, config, output_dir, position, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET config=excluded.config, output_dir=excluded.output_dir, "
                    "position=excluded.position", (name, config, output_dir, position, time.time()))

    def runs(self) -> list[RunRow]:
        names = ", ".join(f.name for f in fields(RunRow))
        with self._guard():
            rows = self.db.execute(f"SELECT {names} FROM runs ORDER BY position").fetchall()
        return [RunRow(*row) for row in rows]

    def get(self, name: str) -> RunRow:
        for row in self.runs():
            if row.name == name:
                return row
        raise KeyError(name)

    def add_run(self, name: str, config: str, output_dir: str) -> None:
        """Add one run at the end (lfgen tune's next trial); a run already known keeps its state."""
        with self._guard(), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            position = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM runs").fetchone()[0]
            self.db.execute(
                "INSERT INTO runs (name, config, output_dir, position, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET config=excluded.config, output_dir=excluded.output_dir",
                (name, config, output_dir, position, time.time()))

    def transition(self, name: str, to: RunState, *, reason: str | None = None, detail: str | None = None,
                   event: tuple[str, str | dict] | None = None, **values: Any) -> None:
        """Move run *name* to *to* in one transaction: its state, reason and detail; its timestamps (``started``
        when it starts running, ``ended`` when it stops or fails to start); its process ids, cleared once it does
        not run; any other column in *values* (attempts, command, gpus, oom_retries ...); and its *event* (kind,
        message), when given. A move ``lfgen.runs.states.MOVES`` does not allow is a StateError (nothing written).
        """
        now = time.time()
        row = {"state": str(to), "reason": reason, "detail": detail, "updated": now}
        with self._guard(), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            found = self.db.execute("SELECT state FROM runs WHERE name=?", (name,)).fetchone()
            if found is None:
                raise KeyError(name)
            current = RunState(found[0])
            if not allowed(current, to):
                raise StateError(f"{self.path}: run {name} cannot go from {current} to {to}")
            if to is RunState.RUNNING:
                row.update(started=now, ended=None)
            else:
                row.update(pid=None, pgid=None)
                if current is RunState.RUNNING or to is RunState.FAILED:
                    row["ended"] = now
            row.update(values)
            assignments = ", ".join(f"{key}=:{key}" for key in row)
            self.db.execute(f"UPDATE runs SET {assignments} WHERE name=:name", {**row, "name": name})
            if event is not None:
                kind, message = event
                self.db.execute("INSERT INTO events (run, time, kind, message) VALUES (?, ?, ?, ?)",
                                (name, now, kind, message if isinstance(message, str) else json.dumps(message)))

    def event(self, run: str, kind: str, message: str | dict) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self._tx("INSERT INTO events (run, time, kind, message) VALUES (?, ?, ?, ?)", (run, time.time(), kind, text))

    def evaluation(self, run: str) -> tuple[str, str | None] | None:
        """(state, detail) of the run's evaluation, None when it was never evaluated."""
        with self._guard():
            row = self.db.execute("SELECT state, detail FROM evaluations WHERE run=?", (run,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_evaluation(self, run: str, state: EvalState, *, detail: str | None = None,
                       options: dict | None = None) -> None:
        """Record the run's evaluation as *state* (running: its start; done/failed: its end), one transaction."""
        now = time.time()
        state = EvalState(state)
        if state is EvalState.RUNNING:
            self._tx("INSERT INTO evaluations (run, state, started, ended, detail, options) VALUES (?, ?, ?, NULL, NULL, ?)"
                     " ON CONFLICT(run) DO UPDATE SET state=excluded.state, started=excluded.started, ended=NULL, "
                     "detail=NULL, options=excluded.options", (run, str(state), now, json.dumps(options or {})))
        else:
            self._tx("UPDATE evaluations SET state=?, ended=?, detail=? WHERE run=?", (str(state), now, detail, run))
        self.event(run, f"eval:{state}", detail or (options or {}))

    def events(self, run: str | None = None) -> list[tuple[str, float, str, str]]:
        sql, params = "SELECT run, time, kind, message FROM events", ()
        if run is not None:
            sql, params = sql + " WHERE run=?", (run,)
        with self._guard():
            return list(self.db.execute(sql + " ORDER BY id", params).fetchall())


def read_rows(path: Path) -> dict[str, RunRow]:
    """The runs table at *path*, read only: nothing is created or changed; {} when there is no state yet.

    Raises ``InputError`` when the file exists but cannot be read as lfgen's run state.
    """
    if not path.is_file():
        return {}
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            cursor = db.execute("SELECT * FROM runs ORDER BY position")
            columns = [c[0] for c in cursor.description]
            rows = [RunRow(**dict(zip(columns, row))) for row in cursor.fetchall()]
        finally:
            db.close()
    except (sqlite3.Error, TypeError, ValueError) as exc:  # TypeError: other columns; ValueError: an unknown state
        raise InputError(f"{path}: the run state cannot be read ({exc})") from None
    return {row.name: row for row in rows}


def current_state(row: RunRow | None) -> RunState:
    """A run's state as lfgen run left it: pending when it has no row yet; a run marked running whose
    process group is gone (its runner was killed) is interrupted: the next lfgen run resumes it."""
    if row is None:
        return RunState.PENDING
    if row.state is RunState.RUNNING and row.pgid:
        from lfgen.launch import group_alive

        if not group_alive(row.pgid):
            return RunState.INTERRUPTED
    return row.state
