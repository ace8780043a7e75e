"""Reading one LlamaFactory run directory into plain Python data, robustly and fast.

Sources, in the order they are trusted (llamafactory.md §3, cpu-e2e.md §4 and §6):

- ``trainer_log.jsonl``: loss, eval_loss, lr, progress and, with ``RECORD_VRAM=1``, vram per log
  line. A resumed run appends again from its checkpoint, so the last line per step wins.
- ``trainer_state.json`` (the run's own, else the newest ``checkpoint-N/``): grad_norm, and the
  curves when there is no trainer_log.jsonl.
- ``runs/<stamp>/`` TensorBoard events: the last resort, for curves and grad_norm.
- ``train/eval/predict/all_results.json``: final metrics.
- The config: ``lfgen_run.yaml``, else LlamaBoard's ``training_args.yaml``, with ``adapter_config.json``
  filling the LoRA keys either leaves out.

Nothing here raises on bad files: every problem becomes a line of ``RunData.notes``.
Curves are sampled down to about ``max_points`` points (as TensorBoard samples its scalars), in short
runs of consecutive steps so step-to-step oscillation stays visible; a log holding NaN, Infinity or a
zero loss is read in full so those points are never sampled away (parsing.py has the details).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfgen.runs.parsing import (
    VRAM, Series, by_step, elapsed_seconds, grad_norms, last_per_step, last_record, lines_with, loads_lines,
    peak_vram_gib, series_of, thin, to_float, to_int, with_steps,
)
from lfgen.layout import (
    CONFIG_FILES, CONSOLE_LOG, ENV_MANIFEST, EVAL_DIR, RESULT_FILES, RESULTS_FILE, TRAINER_LOG, TRAINER_STATE,
)
from lfgen.runs.environment import counted_samples, read_environment
from lfgen.yamlio import loads

MAX_POINTS = 200  # per curve: enough for a plot and the diagnosis; reading stays fast for 1,000s of runs
NOT_STARTED = ("empty", "pending")  # states of a run with nothing to judge yet
STALE_AFTER_S = 1800  # an unfinished run whose files are older than this is "stopped", not "running"
# adapter_config.json (peft) key -> LlamaFactory key
_ADAPTER_KEYS = {"r": "lora_rank", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
                 "target_modules": "lora_target"}
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)|KeyboardInterrupt)(?::|$)")
_TB_TAGS = {"train/loss": "train_loss", "eval/loss": "eval_loss", "train/learning_rate": "learning_rate",
            "train/grad_norm": "grad_norm"}


@dataclass(slots=True)
class RunData:
    """Everything read from one run directory.

    ``state``: done (a results file or the final trainer_state.json written), failed (lfgen_train.log ends
    with an exception), running (log written in the last STALE_AFTER_S), stopped (unfinished, quiet
    since), empty (nothing logged yet). Compared as part of an experiment, the experiment's run state
    replaces it: pending, running, done, failed or interrupted (``lfgen.results.sources``).
    ``environment``: the run's lfgen_env.json (lfgen.runs.environment); ``samples``: its training
    samples when known.
    """

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    train_loss: Series = field(default_factory=Series)
    eval_loss: Series = field(default_factory=Series)
    learning_rate: Series = field(default_factory=Series)
    grad_norm: Series = field(default_factory=Series)
    results: dict[str, Any] = field(default_factory=dict)
    current_step: int | None = None
    total_steps: int | None = None
    elapsed_s: float | None = None
    vram_peak_gib: float | None = None
    state: str = "empty"
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    samples: int | None = None

    @property
    def final_train_loss(self) -> float | None:
        """The last logged loss (results' ``train_loss`` is the mean over all of training, not the end)."""
        return self.train_loss.last

    @property
    def best_eval(self) -> tuple[float | None, float | None]:
        """(lowest eval loss, its step), counting the final evaluate of eval_results.json."""
        points = [(v, s) for s, v in zip(self.eval_loss.steps, self.eval_loss.values) if math.isfinite(v)]
        final = to_float(self.results.get("eval_loss"))
        if final is not None and math.isfinite(final) and (not points or final < min(points)[0]):
            points.append((final, self.current_step))
        if not points:
            return None, None
        return min(points, key=lambda p: p[0])

    @property
    def final_eval_loss(self) -> float | None:
        final = to_float(self.results.get("eval_loss"))
        return final if final is not None else self.eval_loss.last

    @property
    def effective_batch(self) -> int | None:
        """Micro-batch x gradient accumulation (per GPU: the number of GPUs is not recorded)."""
        from_yaml = self.config_file is not None and self.config_file.suffix == ".yaml"
        micro = to_int(self.config.get("per_device_train_batch_size", 8 if from_yaml else None))  # HF default 8
        accumulation = to_int(self.config.get("gradient_accumulation_steps", 1))
        return micro * accumulation if micro and accumulation else None

    @property
    def runtime_s(self) -> float | None:
        runtime = to_float(self.results.get("train_runtime"))
        return runtime if runtime is not None else self.elapsed_s

    @property
    def samples_per_s(self) -> float | None:
        """Trainer's train_samples_per_second; for a running run, steps x effective batch / elapsed."""
        speed = to_float(self.results.get("train_samples_per_second"))
        if speed is not None:
            return speed
        batch = self.effective_batch
        if self.elapsed_s and self.current_step and batch:
            return self.current_step * batch / self.elapsed_s
        return None


def read_run(run_dir: str | os.PathLike[str], *, max_points: int | None = MAX_POINTS) -> RunData:
    """Read one run directory; never raises for missing, empty, partial or malformed files."""
    run = RunData(path=Path(run_dir))
    try:
        names = {entry.name: entry for entry in os.scandir(run.path)}
    except OSError as exc:
        run.notes.append(f"{run.path}: cannot be listed ({exc.strerror})")
        return run
    newest = 0.0
    if TRAINER_LOG in names:
        newest = max(newest, _mtime(names[TRAINER_LOG]))
        text = _read(run.path / TRAINER_LOG, run.notes)
        if text is not None:
            _read_log(text, run, max_points)
    state_file = _state_file(run.path, names)
    if state_file is not None:
        newest = max(newest, _mtime_path(state_file))
        _read_state(state_file, run, max_points, curves=not run.sources)
    if (not run.sources or not run.grad_norm) and "runs" in names:
        _read_tensorboard(run.path / "runs", run, max_points)
    # all_results.json is the union of the others (Trainer.save_metrics); they matter only without it.
    union = _read_json(run.path / RESULTS_FILE, run.notes) if RESULTS_FILE in names else None
    for name in RESULT_FILES if union is None else ():
        if name in names and (data := _read_json(run.path / name, run.notes)) is not None:
            run.results.update(data)
    run.results.update(union or {})
    if EVAL_DIR in names:  # lfgen eval's predict_results.json and scores (lfgen.runs.scoring)
        from lfgen.runs.scoring import read_eval

        run.results.update(read_eval(run.path))
    _read_config(run, names)
    if ENV_MANIFEST in names:
        run.environment = read_environment(run.path / ENV_MANIFEST, run.notes)
    run.state = _state(run, names, newest)
    return run


def steps_logged(run_dir: str | os.PathLike[str]) -> int:
    """Optimizer steps a run logged: the highest step of its training-loss curve (trainer_log.jsonl, else its
    trainer_state.json; a resumed run logs steps again), 0 when it logged none (lfgen tune's steps per trial)."""
    run = read_run(run_dir, max_points=None)  # every line: a sample could miss the highest step of a resumed run
    return int(max(run.train_loss.steps)) if run.train_loss else 0


def _read_log(text: str, run: RunData, max_points: int | None) -> None:
    last, body = last_record(text, run.notes)
    if last is None:
        run.notes.append("trainer_log.jsonl: the file has no complete line yet")
        return
    # Points the diagnosis must not miss make the whole file count. Uppercase letters occur in LlamaFactory's
    # lines only in NaN and Infinity, so those checks are one memchr each; json writes a zero loss as 0.0.
    full = (max_points is None or ("N" in body and "NaN" in body) or ("I" in body and "Infinity" in body)
            or '"loss": 0.0,' in body)
    train = lines_with(body, '"loss":', None if full else max_points)  # "eval_loss" never contains '"loss":'
    records = with_steps(loads_lines(train, run.notes), run.notes)
    steps = [r["current_steps"] for r in records]
    if not full and any(b < a for a, b in zip(steps, steps[1:])):  # a resumed run logs steps again
        records = with_steps(loads_lines(lines_with(body, '"loss":', None), run.notes), run.notes)
    records = last_per_step(records)
    run.train_loss = thin(series_of(records, "loss"), max_points)
    run.learning_rate = thin(series_of(records, "lr"), max_points)
    evals = with_steps(loads_lines(lines_with(body, '"eval_loss":', None), run.notes), run.notes)
    run.eval_loss = series_of(last_per_step(evals), "eval_loss")
    run.current_step = to_int(last.get("current_steps"))
    run.total_steps = to_int(last.get("total_steps"))
    run.elapsed_s = elapsed_seconds(last.get("elapsed_time"))
    if '"vram_' in body[:body.find("\n")] or '"vram_' in body[body.rfind("\n"):]:  # RECORD_VRAM is per run
        run.vram_peak_gib = peak_vram_gib(VRAM.findall(body))
    run.sources["curves"] = TRAINER_LOG


def _read_state(path: Path, run: RunData, max_points: int | None, *, curves: bool) -> None:
    text = _read(path, run.notes)
    if not text:
        return
    where = path.relative_to(run.path).as_posix()
    if not curves and max_points is not None:
        if '"grad_norm": ' not in text:
            return
        grad = grad_norms(text, max_points)
        if grad is not None:
            run.grad_norm, run.sources["grad_norm"] = grad, where
            return
    try:
        state = json.loads(text)
        history = [entry for entry in state.get("log_history", []) if isinstance(entry, dict)]
    except (ValueError, AttributeError):
        run.notes.append(f"{where}: not valid JSON (cut off while being written?); its curves were skipped")
        return
    run.grad_norm = thin(series_of(history, "grad_norm", "step"), max_points, keep_extremes=True)
    if run.grad_norm:
        run.sources["grad_norm"] = where
    if curves:
        run.train_loss = thin(series_of(history, "loss", "step"), max_points)
        run.learning_rate = thin(series_of(history, "learning_rate", "step"), max_points)
        run.eval_loss = series_of(history, "eval_loss", "step")
        run.current_step = to_int(state.get("global_step"))
        run.total_steps = to_int(state.get("max_steps"))
        if run.train_loss or run.eval_loss:
            run.sources["curves"] = where


def _read_tensorboard(runs_dir: Path, run: RunData, max_points: int | None) -> None:
    """Curves and grad_norm from the newest ``runs/<stamp>/`` folder (each rerun adds one)."""
    try:
        stamps = [p for p in runs_dir.iterdir() if p.is_dir()] or [runs_dir]
    except OSError:
        return
    latest = max(stamps, key=_mtime_path)
    try:
        if not any(p.name.startswith("events.out.tfevents") for p in latest.iterdir()):
            return
    except OSError:
        return
    try:  # tensorboard is optional (lfgen[train]); importing it costs ~0.2 s, so only here
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        run.notes.append("runs/: TensorBoard events found but the tensorboard package is not installed "
                         "(pip install tensorboard)")
        return
    try:
        accumulator = EventAccumulator(str(latest), size_guidance={"scalars": 0})  # 0 = keep every event
        accumulator.Reload()
        tags = set(accumulator.Tags().get("scalars", []))
        series = {name: by_step({e.step: e.value for e in accumulator.Scalars(tag)})
                  for tag, name in _TB_TAGS.items() if tag in tags}
    except Exception as exc:  # noqa: BLE001 - a corrupt event file must not stop a comparison
        run.notes.append(f"runs/{latest.name}: TensorBoard events could not be read ({type(exc).__name__}: {exc})")
        return
    where = f"runs/{latest.name}" if latest != runs_dir else "runs"
    if not run.sources and ("train_loss" in series or "eval_loss" in series):
        run.train_loss = thin(series.get("train_loss", Series()), max_points)
        run.eval_loss = series.get("eval_loss", Series())
        run.learning_rate = thin(series.get("learning_rate", Series()), max_points)
        run.current_step = int(max(run.train_loss.steps + run.eval_loss.steps, default=0)) or None
        run.sources["curves"] = where
    if not run.grad_norm and "grad_norm" in series:
        run.grad_norm = thin(series["grad_norm"], max_points, keep_extremes=True)
        run.sources["grad_norm"] = where


def read_planned(run_dir: str | os.PathLike[str], config_file: str | os.PathLike[str]) -> RunData:
    """A run of an experiment that has not written anything yet: state ``pending``, its config read from
    the experiment's ``runs/<run>.yaml``."""
    run = RunData(path=Path(run_dir), state="pending")
    _read_config_file(run, Path(config_file))
    return run


def _read_config_file(run: RunData, path: Path) -> bool:
    """Read *path* into ``run.config``; False (and a note) when it holds no config."""
    text = _read(path, run.notes)
    if text is None:
        return False
    try:
        data = loads(text)  # LlamaFactory's (OmegaConf's) scalar typing: 1e-4 is a float
    except yaml.YAMLError as exc:
        run.notes.append(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]}); config not read")
        return False
    if not isinstance(data, dict):
        run.notes.append(f"{path.name}: holds no mapping of keys to values; config not read")
        return False
    run.config, run.config_file = data, path
    run.samples = counted_samples(text, data)
    if data.get("finetuning_type", "lora") == "lora":
        _lora_defaults(data)
    return True


def _read_config(run: RunData, names: dict[str, os.DirEntry[str]]) -> None:
    for name in CONFIG_FILES:
        if name in names and _read_config_file(run, run.path / name):
            break
    config = run.config
    if "adapter_config.json" in names:
        adapter = _read_json(run.path / "adapter_config.json", run.notes) or {}
        for peft_key, key in _ADAPTER_KEYS.items():
            value = adapter.get(peft_key)
            if isinstance(value, list):
                value = ",".join(sorted(map(str, value)))  # peft stores a set; its order varies
            if value is not None and key not in config:
                config[key] = value
        if run.config_file is None and adapter:
            run.config_file = run.path / "adapter_config.json"
    run.config = config


def _lora_defaults(config: dict[str, Any]) -> None:
    """LlamaFactory's own defaults for the LoRA keys a config leaves out (hparams/finetuning_args.py)."""
    config.setdefault("lora_rank", 8)
    if config.get("lora_alpha") is None and isinstance(config["lora_rank"], int):
        config["lora_alpha"] = 2 * config["lora_rank"]
    config.setdefault("lora_dropout", 0.0)
    config.setdefault("lora_target", "all")


def _state(run: RunData, names: dict[str, os.DirEntry[str]], newest: float) -> str:
    """done, failed, running, stopped or empty (RunData's docstring says what each means)."""
    # LlamaFactory writes the results files and the top-level trainer_state.json only once a stage ends.
    if run.results or TRAINER_STATE in names:
        return "done"
    error = _last_error(run.path / CONSOLE_LOG) if CONSOLE_LOG in names else None
    if error:
        run.notes.append(f"{CONSOLE_LOG} ends with: {error}")
        return "failed"
    if not (run.train_loss or run.eval_loss or run.current_step):
        return "empty"
    if time.time() - newest > STALE_AFTER_S:
        run.notes.append(f"no results and no new log line for {STALE_AFTER_S // 60} min: "
                         "the run probably stopped (crash, out of memory or killed)")
        return "stopped"
    return "running"


def _last_error(path: Path) -> str | None:
    """The exception line a crashed run's console log ends with (only its last 8 KB are read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines and _EXCEPTION_LINE.match(lines[-1]) else None


def _state_file(run_dir: Path, names: dict[str, os.DirEntry[str]]) -> Path | None:
    if TRAINER_STATE in names:
        return run_dir / TRAINER_STATE
    checkpoints = [(int(n[11:]), n) for n in names if n.startswith("checkpoint-") and n[11:].isdigit()]
    for _, name in sorted(checkpoints, reverse=True):
        if (run_dir / name / TRAINER_STATE).is_file():
            return run_dir / name / TRAINER_STATE
    return None


def _read(path: Path, notes: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"{path.name}: cannot be read ({exc.strerror})")
        return None


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    text = _read(path, notes)
    if text is None:
        return None
    if not text.strip():
        notes.append(f"{path.name}: empty file")
        return None
    try:
        data = json.loads(text)
    except ValueError:
        notes.append(f"{path.name}: not valid JSON (cut off while being written?); skipped")
        return None
    return data if isinstance(data, dict) else None


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


def _mtime_path(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
