"""What a run has spent: its wall time on its GPUs, from the experiment's own records (the one GPU-hours measure).

``state.sqlite``'s event log holds every start of a run and how each attempt ended, with the time: an attempt is
the span from a ``started`` event to the next event that ends it (done, failed, interrupted, pruned, an OOM or
lost-worker retry, or recovered after its runner died); an evaluation (lfgen eval as a tune metric, ``run
--eval``) is the span from ``eval:running`` to its end. Their sum is the run's wall time: process start, imports,
model loading, training, evaluations and saves, everything its GPUs were held for. A run's GPUs are the ones its
last attempt saw (``lfgen_env.json``'s ``gpus``; a run on the CPU counts as one device), so GPU-hours = wall time x
GPUs. lfgen tune's ``--budget``, ``lfgen status``, compare's ``gpu_hours`` and the report read it here.

An attempt still open is counted up to now while its process lives; one whose runner was killed ends at its
console log's last write (the process group died with its runner), never at the moment a later lfgen noticed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_ENDS = ("done", "interrupted", "pruned", "oom-retry", "lost-retry", "recovered")  # and failed:<reason>
_EVAL_ENDS = ("eval:done", "eval:failed")


@dataclass(frozen=True)
class Spend:
    """One run's measured use of its GPUs."""

    wall_s: float  # every attempt and evaluation, summed
    devices: int  # GPUs of its last attempt (1 on the CPU)
    attempts: int
    open: bool  # an attempt or evaluation is running now

    @property
    def gpu_hours(self) -> float:
        return self.wall_s * self.devices / 3600


def _ends(kind: str) -> bool:
    return kind in _ENDS or kind.startswith("failed:")


def spans(events: Iterable[tuple[float, str]], *, now: float, last_activity: float | None = None,
          alive: bool = False) -> tuple[float, int, bool]:
    """(seconds, attempts, open) of one run's ``(time, kind)`` events in order. An attempt left open (no end yet)
    counts up to *now* when its process is *alive*, else up to *last_activity* (when known and later than its
    start); a ``recovered`` end is taken back to *last_activity* when that is earlier."""
    total, attempts, started, evaluating, is_open = 0.0, 0, None, None, False
    for when, kind in events:
        if kind == "started":
            started, attempts = when, attempts + 1
        elif started is not None and _ends(kind):
            end = min(when, last_activity) if kind == "recovered" and last_activity and last_activity > started \
                else when
            total, started = total + max(0.0, end - started), None
        elif kind == "eval:running":
            evaluating = when
        elif evaluating is not None and kind in _EVAL_ENDS:
            total, evaluating = total + max(0.0, when - evaluating), None
    for begun in (started, evaluating):
        if begun is None:
            continue
        end = now if alive else (last_activity if last_activity and last_activity > begun else begun)
        total += max(0.0, end - begun)
        is_open = is_open or alive
    return total, attempts, is_open


def read_events(state_path: Path) -> dict[str, list[tuple[float, str]]]:
    """Every run's ``(time, kind)`` events from *state_path*, read only; {} when there is no state (yet) or it cannot
    be read (the callers show what they can without it)."""
    if not state_path.is_file():
        return {}
    try:
        db = sqlite3.connect(f"{state_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT run, time, kind FROM events ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    found: dict[str, list[tuple[float, str]]] = {}
    for run, when, kind in rows:
        if isinstance(when, (int, float)) and isinstance(kind, str):
            found.setdefault(str(run), []).append((float(when), kind))
    return found


def devices(environment: dict, slot: str | None = None) -> int:
    """The GPUs a run's last attempt had: its lfgen_env.json's ``gpus`` (what the run saw), else its slot's GPUs
    (the runs table's ``gpus``, ``0,1``), else one device (the CPU, or the one GPU LlamaFactory picked)."""
    gpus = environment.get("gpus") if isinstance(environment, dict) else None
    if isinstance(gpus, list) and gpus:
        return len(gpus)
    if slot:
        return len([part for part in str(slot).split(",") if part.strip()])
    return 1


def run_spend(events: list[tuple[float, str]], environment: dict, *, slot: str | None = None,
              last_activity: float | None = None, alive: bool = False, now: float | None = None) -> Spend:
    """One run's spend from its events (``read_events``), its lfgen_env.json and its slot."""
    seconds, attempts, is_open = spans(events, now=time.time() if now is None else now,
                                       last_activity=last_activity, alive=alive)
    return Spend(seconds, devices(environment, slot), attempts, is_open)


def last_write(run_dir: Path, names: Iterable[str]) -> float | None:
    """The newest modification time of *names* in *run_dir* (its console log: when its process last wrote)."""
    times = []
    for name in names:
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            continue
    return max(times) if times else None


def total_gpu_hours(spends: Iterable[Spend], keep: Callable[[Spend], bool] = lambda _: True) -> float:
    return sum(s.gpu_hours for s in spends if keep(s))


def experiment_spend(state_path: Path, root: Path, runs: Iterable[tuple[str, str]],
                     now: float | None = None) -> dict[str, Spend]:
    """Every run's spend in one experiment: *runs* are (name, output dir relative to *root*); the state at
    *state_path* is read only. A run with no event yet has spent nothing."""
    from lfgen.layout import CONSOLE_LOG, ENV_MANIFEST, TRAINER_LOG
    from lfgen.runs.environment import read_environment
    from lfgen.errors import InputError
    from lfgen.runs.states import RunState
    from lfgen.runs.store import current_state, read_rows

    events = read_events(state_path)
    try:
        rows = read_rows(state_path)
    except InputError:  # an unreadable runs table: the events are all there is
        rows = {}
    found = {}
    for name, output_dir in runs:
        out = root / output_dir
        environment = read_environment(out / ENV_MANIFEST, []) if (out / ENV_MANIFEST).is_file() else {}
        row = rows.get(name)
        alive = row is not None and current_state(row) is RunState.RUNNING
        found[name] = run_spend(events.get(name, []), environment, slot=row.gpus if row else None,
                                last_activity=last_write(out, (CONSOLE_LOG, TRAINER_LOG)), alive=alive, now=now)
    return found
