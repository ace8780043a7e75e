"""A run's output dir: the lock that guards it, and whose results it holds.

One lock guards an output dir however a run is reached (an experiment, or one of its run configs given to
``lfgen run`` directly): an flock on ``.<dir>.lfgen-lock`` beside it (``layout.output_lock``), held for as long
as a run trains there. The config a run trained with is recorded in ``lfgen_run.yaml``; a dir whose recorded
config is another one and which holds finished results is never trained into without ``--force``, and a run
whose own files show it finished (its recorded config is its config, and ``all_results.json``) is recognised
as done when the run state was lost.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import RESULTS_FILE, RUN_CONFIG, output_lock
from lfgen.runs.lock import Lock, lock_holder
from lfgen.runs.states import RunState
from lfgen.runs.store import Store

_BATCH = ("per_device_train_batch_size", "gradient_accumulation_steps")  # what an OOM retry changes
_SOURCE = re.compile(r"^#.*\(from (?P<source>.+)\)\s*$")


def lock(output_dir: Path, holder: str) -> Lock:
    """Take the output dir's lock (InputError naming the holder when another lfgen trains there)."""
    return Lock(output_lock(output_dir), f"output dir {output_dir}", holder=holder, verb="trained into").__enter__()


def release(locks: dict[str, Lock], name: str) -> None:
    """Let go of run *name*'s output dir lock, if it is held."""
    held = locks.pop(name, None)
    if held is not None:
        held.__exit__()


def holder(output_dir: Path) -> str | None:
    """Who trains in *output_dir* now (the lock holder's text), or None."""
    return lock_holder(output_lock(output_dir))


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config as far as its results go: not its output_dir, and an OOM retry's micro-batch x accumulation
    only as their product (the effective batch the retry keeps)."""
    values = {key: value for key, value in config.items() if key != "output_dir" and key not in _BATCH}
    micro, accumulation = (config.get(key) for key in _BATCH)
    values["effective batch"] = (micro or 1) * (accumulation or 1) if micro or accumulation else None
    return values


def differences(recorded: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The keys in which two configs differ (results-wise; see _comparable)."""
    a, b = _comparable(recorded), _comparable(config)
    return sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def recorded(output_dir: Path) -> tuple[dict[str, Any], str | None] | None:
    """The config recorded in *output_dir* (lfgen_run.yaml) and the file it came from, or None."""
    from lfgen.yamlio import parse_config

    path = output_dir / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        config = parse_config(text, str(path))
    except (OSError, UnicodeDecodeError, InputError):
        return None
    first = next((line for line in text.splitlines() if line.strip()), "")
    match = _SOURCE.match(first)
    return config, match["source"] if match else None


def finished(output_dir: Path, config: dict[str, Any]) -> bool:
    """*output_dir* holds finished results (all_results.json) trained with *config*."""
    found = recorded(output_dir)
    return (output_dir / RESULTS_FILE).is_file() and found is not None and not differences(found[0], config)


def foreign_results(output_dir: Path, config: dict[str, Any], shown_dir: str, config_file: str) -> str | None:
    """Why a run of *config* must not train into *output_dir*: it holds another config's finished results."""
    found = recorded(output_dir)
    if found is None or not (output_dir / RESULTS_FILE).is_file():
        return None
    keys = differences(found[0], config)
    if not keys:
        return None
    source = f" (made from {found[1]})" if found[1] else ""
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return (f"output_dir {shown_dir} holds the finished results of another config: {shown_dir}/{RUN_CONFIG}{source} "
            f"differs from {config_file} in {shown}; give {config_file} another output_dir, or pass --force to "
            "replace those results")


def _config(root: Path, config_file: str) -> dict[str, Any] | None:
    from lfgen.yamlio import load_config

    try:
        return load_config(root / config_file)
    except InputError:
        return None  # the run fails with its own message when it starts


def preflight(root: Path, runs: list[tuple[str, str, str]], *, force: bool) -> None:
    """Refuse (InputError) to start when a run's output dir is being trained by another lfgen, or holds
    another config's finished results (unless *force*). *runs*: (name, config file, output_dir)."""
    for name, config_file, output_dir in runs:
        out = root / output_dir
        busy = holder(out)
        if busy:
            raise InputError(f"output dir {output_dir} of run {name} is already being trained into by {busy}; "
                             "wait for it, or stop it (Ctrl-C there, or kill that pid)")
        config = _config(root, config_file)
        problem = None if force or config is None else foreign_results(out, config, output_dir, config_file)
        if problem:
            raise InputError(f"run {name}: {problem}")


def recognise_finished(store: Store, root: Path) -> list[str]:
    """Runs the state knows nothing of (pending, never attempted) whose output dirs show they finished with
    their config: recorded as done, so a lost or emptied state never retrains them. Returns their names."""
    found = []
    for row in store.runs():
        if row.state is not RunState.PENDING or row.attempts:
            continue
        config = _config(root, row.config)
        if config is not None and finished(root / row.output_dir, config):
            store.transition(row.name, RunState.DONE, event=(
                "recognised", f"{row.output_dir} holds its finished results ({RUN_CONFIG} matches {row.config}, "
                              f"{RESULTS_FILE}); recorded as done"))
            found.append(row.name)
    return found
