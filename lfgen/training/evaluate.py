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
        check_new_tokens(self.max_new_tokens)
        if not math.isfinite(self.temperature):  # as every float option: nan passes every comparison
            raise InputError(f"--temperature: must be a finite number (got {self.temperature})")
        if self.temperature < 0:
            raise InputError(f"--temperature: must be 0 (greedy) or more (got {self.temperature})")


# The most new tokens one answer may have: a model's whole context at the longest common (128K); more can only
# mean a typo, and generation would run for days (lfgen eval and lfgen sample).
MAX_NEW_TOKENS = 131_072


def check_new_tokens(value: int) -> None:
    if value > MAX_NEW_TOKENS:
        raise InputError(f"--max-new-tokens: must be at most {MAX_NEW_TOKENS:,} (a long model context; got {value}); "
                         "an answer to score is far shorter")


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
    from lfgen.builder.shapes import of_config

    shape = of_config(config)
    if shape.stage.data != "supervised":  # its held-out rows are pairs, KTO rows or text: no reference answer
        raise InputError(f"run {name}: lfgen eval generates answers to held-out SFT rows, and a {shape.label} run's "
                         f"held-out rows have no single reference answer (LlamaFactory's predict refuses them); "
                         f"judge it by {shape.objective} in lfgen compare")


def check_eval_dir(run_dir: Path, name: str) -> None:
    """``RUN/eval`` is lfgen eval's own folder, replaced at each evaluation: a file or a link there is someone
    else's, never removed or followed (the link could lead out of the run)."""
    eval_dir = run_dir / EVAL_DIR
    if eval_dir.is_symlink() or (eval_dir.exists() and not eval_dir.is_dir()):
        what = "a symbolic link" if eval_dir.is_symlink() else "a file"
        raise InputError(f"run {name}: {eval_dir} is {what}, not lfgen eval's folder (it writes the predictions and "
                         "scores there, replacing the folder); move it aside, then evaluate again")


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
    """The run's evaluation finished: lfgen's scores are written (the last step of an evaluation) in its own
    eval folder (a link there is not the run's: ``check_eval_dir``)."""
    return not (Path(run_dir) / EVAL_DIR).is_symlink() and (Path(run_dir) / EVAL_DIR / SCORES).is_file()


@dataclass
class Evaluation:
    """One started evaluation of a run: LlamaFactory's predict on its held-out rows, a child process of lfgen."""

    run_dir: Path
    name: str
    options: EvalOptions
    values: dict[str, Any]  # the predict config it runs
    child: Any  # launch.Child
    started: float

    def ended(self) -> bool:
        return self.child.proc.poll() is not None

    def wait(self, timeout: float) -> None:
        """Sleep up to *timeout*, waking when the predict ends."""
        try:
            self.child.proc.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - TimeoutExpired: it goes on
            pass

    def stop(self) -> None:
        """Stop the predict's whole process group (Ctrl-C); nothing is scored."""
        from lfgen import launch

        launch.stop_group(self.child.pid, grace=3)
        self.child.proc.wait()

    def finish(self) -> dict[str, Any]:
        """Score the answers once the predict has ended: the scores (written last, to ``eval/lfgen_scores.json``).
        Raises RunError when LlamaFactory failed (the message names its log)."""
        from lfgen.runs.scoring import read_predictions, score, token_counter
        from lfgen.yamlio import write_atomic

        code = self.child.proc.wait()
        wall = time.monotonic() - self.started
        eval_dir = self.run_dir / EVAL_DIR
        predictions = eval_dir / PREDICTIONS
        if code != 0 or not predictions.is_file():
            raise RunError(f"run {self.name}: evaluation failed (llamafactory-cli exit {code}): "
                           f"{_last_line(eval_dir / EVAL_LOG)}; fix the cause and run lfgen eval again; "
                           f"log: {eval_dir / EVAL_LOG}")
        predict = read_json(eval_dir / PREDICT_RESULTS)
        count, counted_with = token_counter(self.run_dir)
        scores = score(read_predictions(predictions), count_tokens=count, generation_s=predict.get("predict_runtime"))
        scores.update(eval_time_s=wall, tokens_counted_with=counted_with, options=asdict(self.options),
                      held_out="eval_dataset" if "eval_dataset" in self.values else
                      f"val_size {self.values.get('val_size')}")
        write_atomic(eval_dir / SCORES, json.dumps(scores, indent=1) + "\n")
        return scores


def _ready(run_dir: Path, options: EvalOptions | None, name: str | None) -> tuple[dict[str, Any], Path, str,
                                                                                     EvalOptions]:
    options = options or EvalOptions()
    options.check()
    config, _, root = read_run_config(run_dir)
    name = name or run_dir.name
    require_finished(run_dir, config, name)
    check_eval_dir(run_dir, name)
    return config, root, name, options


def start(run_dir: str | Path, options: EvalOptions | None = None, *, name: str | None = None,
          gpus: list[int] | None = None, root: Path | None = None, env: dict[str, str] | None = None) -> Evaluation:
    """Start the run's evaluation: its predict config written to ``<run>/eval/`` (a clean folder: no stale
    predictions of a killed or forced one) and ``llamafactory-cli train`` started on it, in its own process group.
    Raises InputError for a run that cannot be evaluated, before anything is written. *root* (default: the run
    config's ``lfgen-root``) is where its relative paths resolve; *env* is added to this process's environment (a
    Ray task's forwarded variables)."""
    from lfgen import launch
    from lfgen.builder.render import render

    run_dir = Path(run_dir)
    config, config_root, name, options = _ready(run_dir, options, name)
    root = root or config_root
    values = predict_config(config, run_dir, root, options, name)
    eval_dir = run_dir / EVAL_DIR
    if eval_dir.exists():
        shutil.rmtree(eval_dir)
    eval_dir.mkdir(parents=True)
    config_path = eval_dir / EVAL_CONFIG
    config_path.write_text(render(values, header=[f"lfgen eval of run {name}: LlamaFactory predict on its held-out rows",
                                                  f"lfgen-root: {root}"]), encoding="utf-8")
    env = launch.train_env({**os.environ, **(env or {})}, gpus)
    argv = launch.predict_argv(launch.find_cli(env.get("PATH")), config_path.resolve())
    started = time.monotonic()
    return Evaluation(run_dir, name, options, values, launch.spawn(argv, cwd=root, env=env, log_path=eval_dir / EVAL_LOG),
                      started)


def evaluate(run_dir: str | Path, options: EvalOptions | None = None, *, name: str | None = None,
             gpus: list[int] | None = None, force: bool = False, root: Path | None = None,
             env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Generate on the run's held-out rows with ``llamafactory-cli train`` (do_predict) and score them, waiting for it
    (``lfgen eval RUN_DIR``, a Ray evaluation task).

    Returns the scores (also written to ``<run>/eval/lfgen_scores.json``), or None when the run was already
    scored and *force* is not set. Raises InputError for a run that cannot be evaluated, RunError when
    LlamaFactory fails (the message names the log). Ctrl-C (or ``ray.cancel`` of its task) stops the predict.
    """
    run_dir = Path(run_dir)
    _ready(run_dir, options, name)
    if is_scored(run_dir) and not force:
        return None
    evaluation = start(run_dir, options, name=name, gpus=gpus, root=root, env=env)
    try:
        while not evaluation.ended():  # polled: Ctrl-C, or ray.cancel of a Ray task, can interrupt it
            evaluation.wait(0.2)
    except KeyboardInterrupt:
        evaluation.stop()
        raise
    return evaluation.finish()


def read_json(path: Path) -> dict[str, Any]:
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
