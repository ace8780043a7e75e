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
from lfgen.layout import CONSOLE_LOG, MANIFEST
from lfgen import launch
from lfgen.training import rundir
from lfgen.runs.states import RunState
from lfgen.runs.store import Store, current_state, read_rows
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
    except (LfgenError, OSError) as exc:
        row["note"] = f"cannot be read: {str(exc).splitlines()[0]}"
        return row
    row["experiment"], row["runs"] = target.name, len(target.runs)
    for name, _config, _output_dir in target.runs:
        row[str(current_state(rows.get(name)))] += 1
    return row


# --- status ----------------------------------------------------------------------------------------


def status(target: Target) -> list[dict[str, Any]]:
    """Every run's state, progress from its trainer_log.jsonl, retries and the reason of a failure."""
    rows = {}
    if target.state_path.exists():
        store = Store(target.state_path)
        try:
            rows = {row.name: row for row in store.runs()}
        finally:
            store.close()
    table = []
    for name, _config, output_dir in target.runs:
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
                      "output_dir": output_dir, "vram_gib": progress.vram_gib})
    return table
