"""``lfgen status`` without a target: every experiment under the experiments folder, with its runs' states.

The states come from each experiment's ``state.sqlite``, read only (a run without a row is pending);
an experiment that cannot be read is listed with the reason instead of stopping the listing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, LfgenError
from lfgen.layout import MANIFEST
from lfgen.training.state import STATES, current_state, read_rows

COUNTED = ("done", "failed", "running", "interrupted", "pending")  # the columns, in the order shown


def experiments(experiments_dir: str | os.PathLike[str] = "experiments") -> list[dict[str, Any]]:
    """One row per experiment folder under *experiments_dir*, sorted by name: ``experiment``, ``path``,
    ``runs`` and a count per state (``done``, ``failed``, ``running``, ``interrupted``, ``pending``), and
    ``note`` (why an experiment could not be read, else None)."""
    from lfgen.results.discover import natural_key

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
    from lfgen.training.runner import resolve

    row: dict[str, Any] = {"experiment": path.name, "path": str(path), "runs": 0, **dict.fromkeys(COUNTED, 0),
                           "note": None}
    try:
        target = resolve(str(path))
        rows = read_rows(target.state_path)
    except (LfgenError, OSError) as exc:
        row["note"] = f"cannot be read: {str(exc).splitlines()[0]}"
        return row
    row["experiment"], row["runs"] = target.name, len(target.runs)
    for name, _config, _output_dir in target.runs:
        state = current_state(rows.get(name))
        row[state if state in STATES else "pending"] += 1
    return row
