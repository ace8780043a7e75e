"""A run is keyed by its config's content, not only its name: a config edited since the run last ran is never
silently skipped.

The run state records the content key (``lfgen.builder.steps.config_digest``: every key but output_dir) of the
config each run last started with; a finished run's output dir records the config it trained with
(``lfgen_run.yaml``, lfgen.training.outputs). Before anything starts, ``lfgen run`` compares them with the config
as it is now:

* failed or interrupted, and changed: trained again from scratch (the edit is the fix the failure asked for; a
  checkpoint of the old config is never resumed), and said so;
* done, and changed: refused with one Error naming the keys and --force (its results are of the old config);
  with --force, or --rerun NAME, trained again from scratch, the old results replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.runs.states import RunState
from lfgen.runs.store import RunRow
from lfgen.training import outputs


def _config(root: Path, config_file: str) -> tuple[dict[str, Any] | None, str | None]:
    """The config as it is now and its content key; (None, None) when it cannot be read (the run fails with its own
    message when it starts)."""
    from lfgen.builder.steps import config_digest
    from lfgen.yamlio import load_config

    try:
        config = load_config(root / config_file)
    except InputError:
        return None, None
    return config, config_digest(config)


def digest(root: Path, config_file: str) -> str | None:
    """The content key of run config *config_file* (relative to *root*) now."""
    return _config(root, config_file)[1]


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _changed_keys(row: RunRow, root: Path, config: dict[str, Any]) -> list[str]:
    """The keys in which the config now differs from the one recorded in the run's output dir ([] when none is)."""
    found = outputs.recorded(root / row.output_dir)
    if found is None:
        return []
    # a resumed attempt records the checkpoint it resumed from: where it started, not what it trained with
    return [key for key in outputs.differences(found[0], config) if key != "resume_from_checkpoint"]


def plan(rows: dict[str, RunRow], root: Path, *, force: bool, skip: set[str]) -> list[tuple[str, str, str]]:
    """Compare every run the queue would leave alone (*skip*: those it retrains anyway) with its config now: the
    runs to train again from scratch as (run, "changed", why). An InputError names every done run whose config
    changed (unless *force*), before anything is written."""
    again, refused = [], []
    for name, row in rows.items():
        if name in skip or row.state not in (RunState.DONE, RunState.FAILED, RunState.INTERRUPTED):
            continue
        config, now = _config(root, row.config)
        if config is None:
            continue
        keys = _changed_keys(row, root, config)
        if row.state is RunState.DONE:
            if not keys:
                continue
            if force:
                again.append((name, "changed", f"{row.config} changed since it trained ({_shown(keys)}); trained again "
                                    "(--force), its results of the old config replaced"))
            else:
                refused.append(f"{name} ({_shown(keys)})")
            continue
        if row.digest is not None and now != row.digest or row.digest is None and keys:
            what = "failed" if row.state is RunState.FAILED else "was interrupted"
            changed = f" ({_shown(keys)})" if keys else ""
            again.append((name, "changed", f"{row.config} changed since it {what}{changed}; trained again from "
                                           "scratch"))
    if refused:
        raise InputError(f"the config of {len(refused)} done run(s) changed since it trained: {'; '.join(refused)}; "
                         "their results are of the old config: pass --force to train them again (their results are "
                         "replaced), or undo the edit")
    return again


def record(store, notes: list[tuple[str, str, str]], say) -> None:
    """Each (run, event kind, what happened) in the run's events; a changed config is also said: an edit never
    passes in silence."""
    for name, kind, why in notes:
        store.event(name, kind, why)
        if kind == "changed":
            say(f"{name}: {why}")
