"""How runs share the GPUs: the slots --gpus and --gpus-per-run make, and waiting on the running children."""

from __future__ import annotations

import time
from typing import Any

from lfgen.errors import InputError


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


def wait_any(actives: Any, timeout: float) -> None:
    """Sleep up to *timeout*, waking early when the first run ends (so the end of a run costs no poll)."""
    actives = list(actives)
    if len(actives) == 1:
        actives[0].handle.wait(timeout)
        return
    time.sleep(timeout)
