"""``lfgen calibrate``: the estimate next to the peak memory LlamaFactory measured, and the factors later
estimates use.

``lfgen run`` sets RECORD_VRAM=1, so LlamaFactory writes ``vram_reserved`` (GiB, what the caching
allocator holds: close to what nvidia-smi shows) at every log step of ``trainer_log.jsonl``. For each
(GPU, model family) the median of measured / estimated becomes the factor that scales later estimates
and the fit-to-GPU sizing; the factors live in ``~/.config/lfgen/calibration.json``
(``$LFGEN_CALIBRATION`` overrides the path).
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.builder import estimates
from lfgen.errors import InputError
from lfgen.catalogs.gpus import find_gpu
from lfgen.builder.recipe import read_recipe
from lfgen.layout import RUN_CONFIG, TRAINER_LOG
from lfgen.runs.parsing import peak_vram_gib
from lfgen.yamlio import parse_config, read_text, write_atomic


@dataclass
class Measured:
    run: str
    model: str
    family: str
    gpu: str
    num_gpus: int
    estimate_gib: float
    measured_gib: float

    @property
    def error(self) -> float:
        return (self.estimate_gib - self.measured_gib) / self.measured_gib


def _reserved(trainer_log: Path) -> list[Any]:
    """Every ``vram_reserved`` value LlamaFactory logged (RECORD_VRAM=1)."""
    if not trainer_log.exists():
        return []
    values = []
    for line in trainer_log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "vram_reserved" in record:
            values.append(record["vram_reserved"])
    return values


def measure(run_dir: str | Path, gpu: str | None = None) -> Measured:
    """One run's estimate and measured peak; the GPU comes from its recipe unless *gpu* names it."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise InputError(f"{run_dir}: has no {RUN_CONFIG}; calibrate works on runs lfgen started (lfgen run)")
    text = read_text(path)
    config = parse_config(text, str(path))
    recipe = read_recipe(text)
    options = recipe.options if recipe else {}
    gpu_name = gpu or options.get("gpu")
    if not gpu_name:
        raise InputError(f"{run_dir}: the run does not say which GPU it ran on; pass --gpu NAME")
    card = find_gpu(gpu_name)
    values = _reserved(run_dir / TRAINER_LOG)
    peak = peak_vram_gib(values)
    if not values:
        raise InputError(f"{run_dir}: {TRAINER_LOG} has no vram_reserved; the run must train on a GPU with "
                         "RECORD_VRAM=1 (lfgen run sets it)")
    if peak is None:
        raise InputError(f"{run_dir}: {TRAINER_LOG} has no GPU measurement (vram_reserved is {values[-1]} at every "
                         "step: the run trained on the CPU); calibrate runs that trained on a GPU")
    model = str(config.get("model_name_or_path", ""))
    spec, _ = estimates.model_spec(model, required=True)
    num_gpus = int(options.get("num_gpus", 1))
    found = estimates.estimate(model, config, None, None, num_gpus)  # uncalibrated: what is being checked
    return Measured(run_dir.name, spec.name, spec.model_type, card.name, num_gpus, found.memory_gib["total"], peak)


def calibrate(run_dirs: list[str], gpu: str | None = None, *, store: bool = True) -> tuple[list[Measured], dict]:
    """Measure every run; store the median measured/estimated factor per (GPU, model family)."""
    rows = [measure(run_dir, gpu) for run_dir in run_dirs]
    groups: dict[str, list[Measured]] = {}
    for row in rows:
        groups.setdefault(estimates.calibration_key(row.gpu, row.family), []).append(row)
    factors = {key: {"factor": round(statistics.median(r.measured_gib / r.estimate_gib for r in items), 4),
                     "runs": len(items), "updated": _dt.datetime.now().isoformat(timespec="seconds")}
               for key, items in groups.items()}
    if store:  # load_calibration refuses a broken file, so it is never overwritten
        merged: dict[str, Any] = {**estimates.load_calibration(), **factors}
        write_atomic(estimates.calibration_path(), json.dumps(merged, indent=1, sort_keys=True))
    return rows, factors
