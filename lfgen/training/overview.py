"""``lfgen status``: every run of one experiment (``status``), or every experiment under the experiments
folder with its runs' states (``experiments``).

The states come from each experiment's ``state.sqlite``, read only (a run without a row is pending);
an experiment that cannot be read is listed with the reason instead of stopping the listing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, LfgenError
from lfgen.layout import CONSOLE_LOG, MANIFEST, STUDY
from lfgen import launch
from lfgen.training import rundir
from lfgen.runs.states import RunState
from lfgen.runs.store import Store, current_state, read_rows
from lfgen.runs.study import verify as verify_study
from lfgen.training.target import Target
from lfgen.training.watch import Progress, RunWatcher

# The columns, in the order shown: every RunState, so a state lfgen writes always has its column.
COUNTED = (RunState.DONE, RunState.FAILED, RunState.RUNNING, RunState.INTERRUPTED, RunState.PENDING, RunState.PRUNED)


def experiments(experiments_dir: str | os.PathLike[str] = "experiments") -> list[dict[str, Any]]:
    """One row per experiment folder under *experiments_dir*, sorted by name: ``experiment``, ``path``,
    ``runs`` and a count per state (``done``, ``failed``, ``running``, ``interrupted``, ``pending``, ``pruned``), and
    ``note`` (why an experiment could not be read, else None)."""
    from lfgen.runs.discover import natural_key

    folder = Path(experiments_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such experiments folder; `lfgen sweep` writes experiments there "
                         "(or pass --experiments-dir)")
    found = sorted((p.parent for p in folder.glob(f"*/{MANIFEST}")), key=natural_key)
    if not found:
        raise InputError(f"{folder}: no experiments yet; `lfgen sweep` writes one")
    return [experiment_status(path) for path in found]


def experiment_status(path: Path) -> dict[str, Any]:
    """The row of one experiment folder (see ``experiments``)."""
    from lfgen.training.target import resolve

    row: dict[str, Any] = {"experiment": path.name, "path": str(path), "runs": 0, **dict.fromkeys(map(str, COUNTED), 0),
                           "note": None}
    try:
        target = resolve(str(path))
        rows = read_rows(target.state_path)
        verify_study(path / STUDY)  # a tune experiment's study, as lfgen tune would open it
    except (LfgenError, OSError) as exc:
        row["note"] = f"cannot be read: {str(exc).splitlines()[0]}"
        return row
    row["experiment"], row["runs"] = target.name, len(target.runs)
    for name, _config, _output_dir in target.runs:
        row[str(current_state(rows.get(name)))] += 1
    return row


# --- status ----------------------------------------------------------------------------------------


def _trials(target: Target) -> dict[str, dict[str, Any]]:
    """A tune experiment's trials by run name (their parameters and value, from its study); {} for a sweep, or when
    Optuna is not installed (status still lists the runs; a broken study.db is status's error before this)."""
    from lfgen.layout import STUDY

    folder = target.state_path.parent
    if not (folder / STUDY).is_file():
        return {}
    from lfgen.runs.study import load_rows

    try:
        return {row["run"]: row for row in load_rows(folder) or []}
    except LfgenError:
        return {}


def status(target: Target) -> list[dict[str, Any]]:
    """Every run's state, progress from its trainer_log.jsonl, retries and the reason of a failure; the GPU-hours it
    has used (measured: lfgen.runs.spend) and its ETA in seconds (``eta_s``: a running run's from its own measured
    steps, a run still to start its calibrated estimate, None when unknown; 0 once it has ended); a tune's trials
    also have their parameters and value (``params``, ``value``; None for a sweep's runs)."""
    from lfgen.runs.spend import experiment_spend

    verify_study(target.state_path.parent / STUDY)  # a tune experiment's study.db, broken: one StateError, as in tune
    trials = _trials(target)
    rows = {}
    if os.path.lexists(target.state_path):  # a link to nothing too: Store says what is wrong
        store = Store(target.state_path)
        try:
            rows = {row.name: row for row in store.runs()}
        finally:
            store.close()
    table = []
    spends = experiment_spend(target.state_path, target.root, [(name, out) for name, _, out in target.runs])
    for name, config, output_dir in target.runs:
        row = rows.get(name)
        out = target.root / output_dir
        progress = RunWatcher(out, out / CONSOLE_LOG).poll() if out.exists() else Progress()
        state: str = row.state if row else RunState.PENDING
        reason = row.reason if row else None
        if state is RunState.RUNNING and row and row.pgid and not launch.group_alive(row.pgid):
            state = "interrupted?"  # its runner died; the next lfgen run recovers it
        elif state is RunState.DONE and (why := rundir.results_missing(out)):
            state, reason = "missing", f"done, but {why}"  # lfgen run --retry-missing retrains it
        table.append({"run": name, "state": state, "reason": reason,
                      "step": progress.step, "total": progress.total, "loss": progress.loss,
                      "eval_loss": progress.eval_loss, "attempts": row.attempts if row else 0,
                      "oom_retries": row.oom_retries if row else 0, "detail": row.detail if row else None,
                      "output_dir": output_dir, "vram_gib": progress.vram_gib,
                      "gpu_hours": spends[name].gpu_hours,
                      "eta_s": _eta(state, progress, target.root / config, spends[name].wall_s),
                      "params": trials[name]["params"] if name in trials else None,
                      "value": trials[name]["value"] if name in trials else None})
    return table


def _eta(state: str, progress: Progress, config: Path, spent_s: float) -> float | None:
    """A run's ETA: 0 once it has ended; running, the pace of its own steps (before the first, its estimate less what
    it has run); to start or resume, its estimate (the part its steps have not done)."""
    if state in (RunState.DONE, RunState.FAILED, RunState.PRUNED, "missing"):
        return 0.0
    if state == RunState.RUNNING and progress.eta_s is not None:
        return progress.eta_s
    estimate = _estimate(config)
    if estimate is None:
        return None
    if state == RunState.RUNNING:
        return max(0.0, estimate - spent_s)
    left = 1 - progress.step / progress.total if progress.total else 1.0  # an interrupted run resumes where it was
    return estimate * max(0.0, left)


def _estimate(config: Path) -> float | None:
    """The calibrated estimate of a run's whole time (training, evaluation, start-up) on where it trains."""
    from lfgen.builder.run_estimate import estimate_written, machine_placement, read_written

    try:
        written = read_written(config)
    except LfgenError:
        return None
    where = machine_placement(written)
    return None if where is None else estimate_written(written, where).wall_s


def experiment_eta(rows: list[dict[str, Any]]) -> float | None:
    """Seconds until the experiment is done: the runs to start take the slots as the running ones free them
    (lfgen.runs.eta.experiment_s; as many slots as runs running now, at least one). None when a run to start has no
    estimate."""
    from lfgen.runs.eta import experiment_s

    running = [row["eta_s"] for row in rows if row["state"] == RunState.RUNNING]
    waiting = [row["eta_s"] for row in rows if row["state"] in (RunState.PENDING, RunState.INTERRUPTED,
                                                                  "interrupted?")]
    if any(eta is None for eta in running):
        return None
    return experiment_s(running, waiting, max(1, len(running)))
