"""``lfgen calibrate``: the estimates next to what LlamaFactory measured, and the corrections later estimates use.

Memory: ``lfgen run`` sets RECORD_VRAM=1, so LlamaFactory writes ``vram_reserved`` (GiB, what the caching
allocator holds: close to what nvidia-smi shows) at every log step of ``trainer_log.jsonl``. For each (GPU, model
family) the median of measured / estimated becomes the factor that scales later estimates and the fit-to-GPU
sizing. A run on the CPU measured no GPU memory: it has none to calibrate.

Time: a finished run's ``all_results.json`` holds the trainer's ``train_runtime`` and the final ``eval_runtime``;
against the time model's (uncalibrated) training and evaluation seconds of the same config, the median of
measured / estimated per (device, method) becomes the throughput correction (``time|GPU|method``), stored with
the median start-up (the run's wall time, from its lfgen_env.json's start to its console log's last write, less
the trainer's seconds: imports, model and data loading, saves). Later estimates (explain, sweep and tune dry runs,
status, tune --budget) scale by it and name it. The CPU is a device here too: tiny runs calibrate on it.

Both live in ``~/.config/lfgen/calibration.json`` (``$LFGEN_CALIBRATION`` overrides the path), one entry per key.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder import estimates
from lfgen.errors import InputError
from lfgen.layout import CONSOLE_LOG, ENV_MANIFEST, RUN_CONFIG, TRAINER_LOG
from lfgen.runs.parsing import peak_vram_gib
from lfgen.yamlio import write_atomic


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


@dataclass
class MeasuredTime:
    """One finished run's training and evaluation seconds, estimated (uncalibrated) and measured."""

    run: str
    gpu: str
    method: str
    num_gpus: int
    estimate_s: float
    measured_s: float  # train_runtime + the final eval_runtime
    startup_s: float | None  # wall time less measured_s, when the run's start and end are on record

    @property
    def error(self) -> float:
        return (self.estimate_s - self.measured_s) / self.measured_s

    @property
    def ratio(self) -> float:
        return self.measured_s / self.estimate_s


@dataclass
class Calibration:
    """What calibrate found: memory and time rows, the factors per key, and why a run lacked one of them."""

    memory: list[Measured] = field(default_factory=list)
    factors: dict[str, Any] = field(default_factory=dict)
    times: list[MeasuredTime] = field(default_factory=list)
    time_factors: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (run dir, memory | time, why)

    def to_json(self) -> dict[str, Any]:
        return {"runs": [{**vars(r), "error": r.error} for r in self.memory], "factors": self.factors,
                "time_runs": [{**vars(r), "error": r.error} for r in self.times], "time_factors": self.time_factors,
                "skipped": [{"run": run, "what": what, "why": why} for run, what, why in self.skipped]}


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


def _read(run_dir: Path, gpu: str | None, placed: bool = True) -> tuple[Any, dict[str, Any], Any]:
    """(the run's written config, its lfgen_env.json, where it trained); InputError when lfgen did not start it or
    (*placed*) nothing says which device it trained on, else where is None then."""
    from lfgen.builder.run_estimate import placement, read_written
    from lfgen.runs.environment import read_environment

    if not (run_dir / RUN_CONFIG).is_file():
        raise InputError(f"{run_dir}: has no {RUN_CONFIG}; calibrate works on runs lfgen started (lfgen run)")
    written = read_written(run_dir / RUN_CONFIG)
    environment = read_environment(run_dir / ENV_MANIFEST, []) if (run_dir / ENV_MANIFEST).is_file() else {}
    where = placement(written, environment, gpu)
    if where is None and placed:
        raise InputError(f"{run_dir}: the run does not say which GPU it ran on; pass --gpu NAME")
    return written, environment, where


def measure(run_dir: str | Path, gpu: str | None = None) -> Measured:
    """One run's memory estimate and measured peak; the GPU comes from where it ran unless *gpu* names it."""
    run_dir = Path(run_dir)
    written, _, where = _read(run_dir, gpu, placed=False)
    if where is not None and where.gpu.arch == "CPU":
        raise InputError(f"{run_dir}: trained on the CPU, which measures no GPU memory")
    # What was measured before where: a run on the CPU measured nothing, whichever GPU --gpu would name.
    values = _reserved(run_dir / TRAINER_LOG)
    peak = peak_vram_gib(values)
    if not values:
        raise InputError(f"{run_dir}: {TRAINER_LOG} has no vram_reserved; the run must train on a GPU with "
                         "RECORD_VRAM=1 (lfgen run sets it)")
    if peak is None:
        raise InputError(f"{run_dir}: {TRAINER_LOG} has no GPU measurement (vram_reserved is {values[-1]} at every "
                         "step: the run trained on the CPU); calibrate runs that trained on a GPU")
    if where is None:
        _read(run_dir, gpu)  # says which GPU to name
    model = str(written.config.get("model_name_or_path", ""))
    spec, _ = estimates.model_spec(model, required=True)
    found = estimates.estimate(model, written.config, None, None, where.num_gpus)  # uncalibrated: what is checked
    return Measured(run_dir.name, spec.name, spec.model_type, where.gpu.name, where.num_gpus,
                    found.memory_gib["total"], peak)


def _started(environment: dict[str, Any]) -> float | None:
    try:
        return _dt.datetime.fromisoformat(environment["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def measure_time(run_dir: str | Path, gpu: str | None = None) -> MeasuredTime:
    """One finished run's estimated (uncalibrated) and measured training + evaluation seconds, and its start-up."""
    from lfgen.builder.run_estimate import estimate_written
    from lfgen.builder.timing import time_settings
    from lfgen.models.throughput import measured_throughput
    from lfgen.runs.spend import last_write

    run_dir = Path(run_dir)
    written, environment, where = _read(run_dir, gpu, placed=False)
    # What was measured decides before --gpu: a run that trained on the CPU (lfgen_env.json says so, or names no GPU
    # and LlamaFactory logged no GPU memory at any step) times the CPU, whichever GPU --gpu names for the other runs.
    values = _reserved(run_dir / TRAINER_LOG)
    if environment.get("device") == "cpu" or (where is None and values and peak_vram_gib(values) is None):
        from lfgen.builder.run_estimate import Placement
        from lfgen.catalogs.gpus import cpu_device

        where = Placement(cpu_device(), 1, "trained on the CPU")
    elif where is None:
        _read(run_dir, gpu)  # a GPU run that does not say which: --gpu names it
    speed = measured_throughput(run_dir)
    if not speed.finished or speed.runtime_s is None or speed.runtime_s <= 0:
        raise InputError(f"{run_dir}: not finished (no train_runtime in all_results.json yet); calibrate finished runs")
    found = estimate_written(written, where, calibrated=False)
    if found.time is None:
        raise InputError(f"{run_dir}: {found.note}")
    estimate = found.time["train_s"] + found.time["eval_s"]
    measured = speed.runtime_s + (speed.eval_runtime_s or 0.0)
    start, end = _started(environment), last_write(run_dir, (CONSOLE_LOG,))
    startup = end - start - measured if start is not None and end is not None and end - start > measured else None
    return MeasuredTime(run_dir.name, where.gpu.name, time_settings(written.config, where.num_gpus).method,
                        where.num_gpus, estimate, measured, startup)


def calibrate(run_dirs: list[str], gpu: str | None = None, *, store: bool = True) -> Calibration:
    """Measure every run's memory and time; store the median measured/estimated factor per (GPU, model family) and
    per (device, method). A run with neither is an error (nothing is stored then)."""
    found = Calibration()
    for run_dir in run_dirs:
        reasons = []
        for what, measure_one, rows in (("memory", measure, found.memory), ("time", measure_time, found.times)):
            try:
                rows.append(measure_one(run_dir, gpu))
            except InputError as exc:
                if "pass --gpu" in str(exc) or "has no lfgen_run.yaml" in str(exc):
                    raise
                reasons.append((what, str(exc)))
        if len(reasons) == 2:
            memory, time = (why for _, why in reasons)
            raise InputError(f"{memory}; and no time to calibrate: {time.removeprefix(f'{run_dir}: ')}")
        found.skipped += [(run_dir, what, why) for what, why in reasons]
    found.factors = _factors(found.memory, lambda r: estimates.calibration_key(r.gpu, r.family),
                             lambda r: r.measured_gib / r.estimate_gib)
    found.time_factors = _factors(found.times, lambda r: _time_key(r.gpu, r.method), lambda r: r.ratio)
    for key, items in _groups(found.times, lambda r: _time_key(r.gpu, r.method)).items():
        startups = [r.startup_s for r in items if r.startup_s is not None]
        if startups:
            found.time_factors[key]["startup_s"] = round(statistics.median(startups), 1)
    if store:  # load_calibration refuses a broken file, so it is never overwritten
        merged: dict[str, Any] = {**estimates.load_calibration(), **found.factors, **found.time_factors}
        write_atomic(estimates.calibration_path(), json.dumps(merged, indent=1, sort_keys=True))
    return found


def _time_key(gpu: str, method: str) -> str:
    from lfgen.builder.timing import time_key

    return time_key(gpu, method)


def _groups(rows: list[Any], key: Any) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def _factors(rows: list[Any], key: Any, ratio: Any) -> dict[str, Any]:
    now = _dt.datetime.now().isoformat(timespec="seconds")
    return {name: {"factor": float(f"{statistics.median(ratio(r) for r in items):.4g}"), "runs": len(items),
                   "updated": now}
            for name, items in _groups(rows, key).items()}
