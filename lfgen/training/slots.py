"""How runs share the GPUs: the slots --gpus and --gpus-per-run make, waiting on the running children, and
the --dry-run plan of which run goes where."""

from __future__ import annotations

import select
import shlex
import time
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.layout import CONSOLE_LOG, RUN_CONFIG
from lfgen import launch


def gpu_slots(gpus: list[int] | None, per_run: int) -> list[list[int] | None]:
    """One slot per run that may train at once: its GPUs (None: whatever LlamaFactory sees)."""
    if gpus is None:
        if per_run != 1:
            raise InputError("--gpus-per-run: needs --gpus (which GPUs to share out)")
        return [None]  # one run at a time, on whatever LlamaFactory sees (the CPU here when there is no GPU)
    if per_run < 1:
        raise InputError(f"--gpus-per-run: must be at least 1 (got {per_run})")
    if per_run > len(gpus):
        raise InputError(f"--gpus-per-run: {per_run} is more than the {len(gpus)} GPU(s) given with --gpus")
    return [gpus[i:i + per_run] for i in range(0, len(gpus) - per_run + 1, per_run)]


def wait_children(children: list[Any], timeout: float) -> None:
    """Sleep up to *timeout*, waking as soon as one of the guarded *children* (launch.Child) ends: a guard writes
    its console's tail to its pipe when its run ends, so the pipe turning readable is the end, seen at once."""
    pipes = [child.proc.stdout for child in children if child.proc.stdout is not None and not child.proc.stdout.closed]
    if not pipes:
        time.sleep(timeout)
        return
    select.select(pipes, [], [], timeout)


def dry_run_lines(target: Any, store: Any, slots: list[list[int] | None], queue: list[str]) -> list[str]:
    """What lfgen run --dry-run prints: each queued run, its slot, environment and command."""
    cli = launch.find_cli()
    lines = [f"{target.name}: {len(queue)} run(s) to start in {target.root}, "
             f"{len(slots)} at a time"]
    for index, name in enumerate(queue):
        row = store.get(name)
        slot = slots[index % len(slots)]
        env = launch.train_env({}, slot)
        where = f"GPUs {','.join(map(str, slot))}" if slot else "default devices (CPU when there is no GPU)"
        lines.append(f"  {name} [{row.state}{', ' + row.reason if row.reason else ''}] on {where}")
        lines.append(f"    {' '.join(f'{k}={v}' for k, v in sorted(env.items()) if k != 'TOKENIZERS_PARALLELISM')} "
                     f"{shlex.join(launch.train_argv(cli, Path(row.output_dir) / RUN_CONFIG))}")
        lines.append(f"    config {row.config} -> {row.output_dir}/{RUN_CONFIG}; log {row.output_dir}/{CONSOLE_LOG}")
    return lines
