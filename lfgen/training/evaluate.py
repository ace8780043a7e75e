"""``lfgen eval``: generate on a run's held-out data with LlamaFactory itself, then score the answers.

The predict config comes from the run's own ``lfgen_run.yaml``: its model, adapter (the run dir), template
and data. The held-out rows are the run's ``eval_dataset``, or the split ``val_size`` made for training:
LlamaFactory 0.9.5 splits the merged raw dataset (after ``max_samples``) with datasets'
``train_test_split(test_size=val_size, seed=seed)``, whose test rows are the first ``n_test`` of one
permutation of ``seed`` and the row count. The same ``dataset``, ``max_samples``, ``val_size`` and ``seed``
therefore give the same held-out rows, never training rows; ``--max-samples N`` below the held-out count
asks for ``val_size: N``, the first N of that same permutation (a subset of the held-out rows).

Everything goes to ``<run>/eval/`` (LlamaFactory's predict_results.json and generated_predictions.jsonl,
lfgen's scores), so nothing clashes with the training files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, RunError
from lfgen.layout import EVAL_CONFIG, EVAL_DIR, EVAL_LOG, PREDICT_RESULTS, PREDICTIONS, RESULTS_FILE, SCORES, read_run_config

# Keys of the training config that the predict run needs as they were: the model, and how rows are read.
_MODEL_KEYS = ("model_name_or_path", "template", "finetuning_type", "trust_remote_code", "cache_dir",
               "quantization_bit", "quantization_method", "flash_attn", "bf16", "fp16", "use_cpu", "infer_dtype")
_DATA_KEYS = ("dataset_dir", "cutoff_len", "default_system", "enable_thinking", "tool_format",
              "preprocessing_num_workers", "dataloader_num_workers", "overwrite_cache", "media_dir")
_SPLIT_KEYS = ("dataset", "max_samples", "val_size", "seed", "mix_strategy", "interleave_probs", "streaming",
               "buffer_size")
_ADAPTER_TYPES = ("lora", "oft")
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin",
            "model.safetensors.index.json")


@dataclass(frozen=True)
class EvalOptions:
    """How to generate: ``temperature`` 0 decodes greedily, so scores are deterministic."""

    max_samples: int | None = None
    batch_size: int | None = None  # None: the run's per_device_eval_batch_size, else 8
    max_new_tokens: int = 128
    temperature: float = 0.0

    def check(self) -> None:
        for name, value, low in (("--max-samples", self.max_samples, 1), ("--batch-size", self.batch_size, 1),
                                 ("--max-new-tokens", self.max_new_tokens, 1)):
            if value is not None and value < low:
                raise InputError(f"{name}: must be at least {low} (got {value})")
        if self.temperature < 0:
            raise InputError(f"--temperature: must be 0 (greedy) or more (got {self.temperature})")


def require_finished(run_dir: Path, config: dict[str, Any], name: str) -> None:
    """A run that can be evaluated: finished (all_results.json), with trained weights and held-out data."""
    if not (run_dir / RESULTS_FILE).is_file():
        raise InputError(f"run {name}: not finished ({run_dir} has no {RESULTS_FILE}); finish it with "
                         "`lfgen run` (check `lfgen status`), then evaluate it")
    if not any((run_dir / weights).is_file() for weights in _WEIGHTS):
        raise InputError(f"run {name}: {run_dir} has no trained adapter or model; train it again with "
                         "`lfgen run --rerun` (or point lfgen eval at the run's output_dir)")
    if not config.get("eval_dataset") and not _positive(config.get("val_size")):
        raise InputError(f"run {name}: has no held-out data (no eval_dataset and no val_size in its config); "
                         "set val_size (e.g. 0.1) or eval_dataset in the experiment and train it again")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e-6


def held_out(config: dict[str, Any], root: Path, max_samples: int | None, name: str) -> dict[str, Any]:
    """The data keys that make LlamaFactory predict on the run's held-out rows (and at most *max_samples*)."""
    if config.get("eval_dataset"):
        keys = {"eval_dataset": config["eval_dataset"]}
        cap = config.get("max_samples")  # training read the eval datasets with it too
        if max_samples is not None:
            cap = min(max_samples, cap) if isinstance(cap, int) else max_samples
        if cap is not None:
            keys["max_samples"] = cap
        return keys
    keys = {key: config[key] for key in _SPLIT_KEYS if key in config}
    if max_samples is not None:
        held = _held_out_rows(config, root, name)
        if max_samples < held:
            if max_samples < 2:
                raise InputError(f"run {name}: --max-samples 1 cannot cut a val_size split (LlamaFactory reads "
                                 "val_size 1 as a fraction); give --max-samples 2 or more")
            keys["val_size"] = max_samples  # the first N rows of the same permutation: held-out rows only
    return keys


def _held_out_rows(config: dict[str, Any], root: Path, name: str) -> int:
    """How many rows training held out (val_size of the rows read), counted the way LlamaFactory reads them."""
    from lfgen.builder.datasets import count_rows, load_info, split_names

    val_size = float(config["val_size"])
    if val_size > 1:
        return int(val_size)
    if config.get("streaming") or config.get("mix_strategy", "concat") != "concat":
        raise InputError(f"run {name}: --max-samples cannot cut a streamed or interleaved val_size split; "
                         "evaluate the whole split (drop --max-samples)")
    dataset_dir = root / str(config.get("dataset_dir", "data"))
    info = load_info(dataset_dir)
    total = 0
    for dataset in split_names(config.get("dataset")):
        size = count_rows(dataset, info.get(dataset, {}), dataset_dir, config.get("max_samples"))
        if size.rows is None:
            raise InputError(f"run {name}: --max-samples needs the held-out row count, but {size.note}; "
                             "evaluate the whole split (drop --max-samples)")
        total += size.rows
    return math.ceil(val_size * total)


def predict_config(config: dict[str, Any], run_dir: Path, root: Path, options: EvalOptions,
                   name: str = "run") -> dict[str, Any]:
    """The LlamaFactory predict config of a run: its model and adapter, its held-out rows, greedy by default."""
    run_dir = run_dir.resolve()
    values = {key: config[key] for key in _MODEL_KEYS if key in config}
    finetuning = config.get("finetuning_type", "lora")
    values["finetuning_type"] = finetuning
    if finetuning in _ADAPTER_TYPES:
        values["adapter_name_or_path"] = str(run_dir)
    else:  # full and freeze save the whole model in the run dir
        values["model_name_or_path"] = str(run_dir)
    values.update(stage="sft", do_train=False, do_predict=True, predict_with_generate=True)
    values.update({key: config[key] for key in _DATA_KEYS if key in config})
    values.update(held_out(config, root, options.max_samples, name))
    batch = options.batch_size or config.get("per_device_eval_batch_size") or 8
    values.update(output_dir=str(run_dir / EVAL_DIR), overwrite_output_dir=True, report_to="none",
                  per_device_eval_batch_size=batch, max_new_tokens=options.max_new_tokens)
    if options.temperature > 0:
        values.update(do_sample=True, temperature=options.temperature)
    else:
        values["do_sample"] = False
    return values


def is_scored(run_dir: str | Path) -> bool:
    """The run's evaluation finished: lfgen's scores are written (the last step of an evaluation)."""
    return (Path(run_dir) / EVAL_DIR / SCORES).is_file()


def evaluate(run_dir: str | Path, options: EvalOptions | None = None, *, name: str | None = None,
             gpus: list[int] | None = None, force: bool = False, root: Path | None = None,
             env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Generate on the run's held-out rows with ``llamafactory-cli train`` (do_predict) and score them.

    Returns the scores (also written to ``<run>/eval/lfgen_scores.json``), or None when the run was already
    scored and *force* is not set. Raises InputError for a run that cannot be evaluated, RunError when
    LlamaFactory fails (the message names the log). *root* (default: the run config's ``lfgen-root``) is where
    its relative paths resolve; *env* is added to this process's environment (a Ray task's forwarded variables).
    """
    from lfgen.builder.render import render
    from lfgen.runs.scoring import read_predictions, score, token_counter
    from lfgen import launch
    from lfgen.yamlio import write_atomic

    options = options or EvalOptions()
    options.check()
    run_dir = Path(run_dir)
    config, _, config_root = read_run_config(run_dir)
    root = root or config_root
    name = name or run_dir.name
    require_finished(run_dir, config, name)
    if is_scored(run_dir) and not force:
        return None
    values = predict_config(config, run_dir, root, options, name)
    eval_dir = run_dir / EVAL_DIR
    if eval_dir.exists():
        shutil.rmtree(eval_dir)  # a killed or forced evaluation starts clean: no stale predictions
    eval_dir.mkdir(parents=True)
    config_path = eval_dir / EVAL_CONFIG
    config_path.write_text(render(values, header=[f"lfgen eval of run {name}: LlamaFactory predict on its held-out rows",
                                                  f"lfgen-root: {root}"]), encoding="utf-8")
    env = launch.train_env({**os.environ, **(env or {})}, gpus)
    argv = launch.predict_argv(launch.find_cli(env.get("PATH")), config_path.resolve())
    started = time.monotonic()
    child = launch.spawn(argv, cwd=root, env=env, log_path=eval_dir / EVAL_LOG)
    try:
        while (code := child.proc.poll()) is None:  # polled: Ctrl-C, or ray.cancel of a Ray task, can interrupt it
            time.sleep(0.2)
    except KeyboardInterrupt:
        launch.stop_group(child.pid, grace=3)
        raise
    wall = time.monotonic() - started
    predictions = eval_dir / PREDICTIONS
    if code != 0 or not predictions.is_file():
        raise RunError(f"run {name}: evaluation failed (llamafactory-cli exit {code}): {_last_line(eval_dir / EVAL_LOG)}; "
                       f"fix the cause and run lfgen eval again; log: {eval_dir / EVAL_LOG}")
    predict = _read_json(eval_dir / PREDICT_RESULTS)
    count, counted_with = token_counter(run_dir)
    scores = score(read_predictions(predictions), count_tokens=count, generation_s=predict.get("predict_runtime"))
    scores.update(eval_time_s=wall, tokens_counted_with=counted_with, options=asdict(options),
                  held_out="eval_dataset" if "eval_dataset" in values else f"val_size {values.get('val_size')}")
    write_atomic(eval_dir / SCORES, json.dumps(scores, indent=1) + "\n")
    return scores


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    errors = [line for line in lines if "Error" in line]
    return (errors or lines or ["no output"])[-1].strip()[:300]


# --- an experiment's evaluations, recorded in its state ------------------------------------------------


@dataclass
class Outcome:
    """What happened to one run: scored, already scored (skipped), failed, or not finished (not evaluated)."""

    run: str
    status: str
    scores: dict[str, Any] | None = None
    detail: str | None = None


INTERRUPTED = "stopped with Ctrl-C; lfgen eval evaluates it again"  # an evaluation's detail after Ctrl-C


def begin_recorded(store: Any, name: str, run_dir: Path, options: EvalOptions, force: bool = False) -> Outcome | None:
    """The first half of a recorded evaluation: the Outcome "skipped" for a run already scored (unless *force*),
    else None once its evaluation is recorded as running."""
    if is_scored(run_dir) and not force:
        if (store.evaluation(name) or ("",))[0] != "done":
            store.set_evaluation(name, "running", options=asdict(options))  # scored, then killed before recording
            store.set_evaluation(name, "done", detail="scores found on disk")
        return Outcome(name, "skipped", _read_json(run_dir / EVAL_DIR / SCORES), "already scored; --force re-scores it")
    store.set_evaluation(name, "running", options=asdict(options))
    return None


def end_recorded(store: Any, name: str, scores: dict[str, Any] | None = None, error: str | None = None) -> Outcome:
    """The second half: the evaluation recorded as done (its *scores*) or failed (*error*); the training's
    state is never touched."""
    if error is not None or scores is None:
        store.set_evaluation(name, "failed", detail=error)
        return Outcome(name, "failed", detail=error)
    store.set_evaluation(name, "done", detail=f"{scores['samples_scored']} samples scored")
    return Outcome(name, "scored", scores)


def evaluate_recorded(store: Any, name: str, run_dir: Path, options: EvalOptions, *, gpus: list[int] | None = None,
                      force: bool = False) -> Outcome:
    """Evaluate one run of an experiment and record it in the experiment's state (``evaluations`` table): a
    scored run is never scored again unless *force*; a failure is the evaluation's, never the training's."""
    from lfgen.errors import LfgenError

    skipped = begin_recorded(store, name, run_dir, options, force)
    if skipped is not None:
        return skipped
    try:
        scores = evaluate(run_dir, options, name=name, gpus=gpus, force=True)
    except KeyboardInterrupt:
        end_recorded(store, name, error=INTERRUPTED)
        raise
    except LfgenError as exc:
        return end_recorded(store, name, error=str(exc))
    return end_recorded(store, name, scores)


def evaluate_experiment(target: Any, options: EvalOptions | None = None, *, force: bool = False,
                        gpus: list[int] | None = None, progress: Any = None, remote: Any = None) -> list[Outcome]:
    """Evaluate every finished run of an experiment (a ``lfgen.training.target.Target``) under the experiment's
    lock, one at a time here, or all at once in *remote* (``lfgen.training.ray_eval.RayEvaluations``: one Ray
    task each); resumable: a killed lfgen eval goes on where it stopped. *progress* (optional) is called with
    each Outcome as it happens."""
    from lfgen.runs.lock import Lock
    from lfgen.runs.store import Store, read_rows

    options = options or EvalOptions()
    options.check()
    outcomes: list[Outcome] = []

    def note(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)

    # the runner's own lock: an experiment is trained or evaluated by one lfgen at a time (both write its state)
    with Lock(target.lock_path, f"experiment {target.name}", holder="lfgen eval", verb="trained or evaluated"):
        states = {name: row.state for name, row in read_rows(target.state_path).items()}
        store = Store(target.state_path)
        try:
            for name, _config, output_dir in target.runs:
                run_dir = target.root / output_dir
                state = states.get(name)
                if (state not in (None, "done")) or not (run_dir / RESULTS_FILE).is_file():
                    note(Outcome(name, "not finished", detail=f"{state or 'not trained'}; finish it with lfgen run"))
                elif remote is None:
                    note(evaluate_recorded(store, name, run_dir, options, gpus=gpus, force=force))
                elif (outcome := remote.start(store, name, run_dir, options, force)) is not None:  # None: started
                    note(outcome)
            while remote is not None and remote.running:
                for outcome in remote.collect(timeout=1.0):
                    note(outcome)
        except KeyboardInterrupt:
            if remote is not None:
                remote.interrupt()  # its tasks cancelled, their evaluations recorded as stopped
            raise
        finally:
            store.close()
    order = [name for name, _, _ in target.runs]
    return sorted(outcomes, key=lambda outcome: order.index(outcome.run))
