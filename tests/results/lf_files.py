"""Writes run directories exactly as LlamaFactory 0.9.5 + transformers 5.6 write them.

Formats from ../shared/research/llamafactory.md §3 and cpu-e2e.md §4, checked against the installed
code: ``LogCallback.on_log`` (llamafactory/train/callbacks.py: ``json.dumps(logs)`` per line, None
values dropped, elapsed as ``str(timedelta)``), ``TrainerState.save_to_json`` (``indent=2,
sort_keys=True``), ``Trainer.save_metrics`` (``indent=4, sort_keys=True``) and peft's adapter_config.json.
Used by the tests and by benchmarks/bench_compare.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Curves:
    """What a run logged: one train loss per logging step, eval losses at some steps."""

    loss: Sequence[float]
    eval: dict[int, float] = field(default_factory=dict)  # step -> eval_loss
    grad_norm: Sequence[float] | None = None
    lr: Sequence[float] | None = None
    logging_steps: int = 1
    seconds_per_step: float = 0.5
    samples_per_step: int = 32

    @property
    def steps(self) -> list[int]:
        return [(i + 1) * self.logging_steps for i in range(len(self.loss))]


def trainer_log_lines(curves: Curves, total_steps: int, *, finished: bool, vram: bool = False) -> list[str]:
    """The lines of trainer_log.jsonl, in the order LogCallback writes them."""
    lines = []
    epochs_per_step = 3.0 / total_steps

    def progress(step: int) -> dict[str, Any]:
        elapsed = step * curves.seconds_per_step
        remaining = (total_steps - step) * curves.seconds_per_step
        return {"epoch": step * epochs_per_step, "percentage": round(step / total_steps * 100, 2),
                "elapsed_time": str(timedelta(seconds=int(elapsed))),
                "remaining_time": str(timedelta(seconds=int(remaining)))}

    for i, step in enumerate(curves.steps):
        p = progress(step)
        logs = {"current_steps": step, "total_steps": total_steps, "loss": curves.loss[i],
                "lr": _lr(curves, i, total_steps), "epoch": p["epoch"], "percentage": p["percentage"],
                "elapsed_time": p["elapsed_time"], "remaining_time": p["remaining_time"]}
        if vram:
            logs["vram_allocated"] = round(10.0 + 6.0 * step / total_steps, 2)
            logs["vram_reserved"] = round(12.0 + 6.0 * step / total_steps, 2)
        lines.append(json.dumps(logs))
        if step in curves.eval:
            lines.append(json.dumps({"current_steps": step, "total_steps": total_steps,
                                     "eval_loss": curves.eval[step], **p}))
    if finished:
        last = curves.steps[-1] if curves.steps else total_steps
        lines.append(json.dumps({"current_steps": last, "total_steps": total_steps, **progress(last)}))
    return lines


def log_history(curves: Curves, total_steps: int, upto: int | None = None, *, finished: bool) -> list[dict]:
    """trainer_state.json's log_history: train entries, eval entries and the closing train summary."""
    history: list[dict[str, Any]] = []
    epochs_per_step = 3.0 / total_steps
    for i, step in enumerate(curves.steps):
        if upto is not None and step > upto:
            break
        entry = {"epoch": step * epochs_per_step, "learning_rate": _lr(curves, i, total_steps),
                 "loss": curves.loss[i], "step": step}
        if curves.grad_norm is not None:
            entry["grad_norm"] = curves.grad_norm[i]
        history.append(entry)
        if step in curves.eval:
            history.append({"epoch": step * epochs_per_step, "eval_loss": curves.eval[step], "eval_runtime": 1.25,
                            "eval_samples_per_second": 40.0, "eval_steps_per_second": 5.0, "step": step})
    if finished:
        history.append({"epoch": 3.0, "step": total_steps, "total_flos": 2019803136.0,
                        "train_loss": sum(curves.loss) / max(1, len(curves.loss)), **_train_speed(curves, total_steps)})
    return history


def trainer_state(curves: Curves, total_steps: int, upto: int | None = None, *, finished: bool) -> str:
    step = upto if upto is not None else total_steps
    state = {"best_global_step": None, "best_metric": None, "best_model_checkpoint": None,
             "epoch": step * 3.0 / total_steps, "eval_steps": 200, "global_step": step,
             "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
             "log_history": log_history(curves, total_steps, upto, finished=finished),
             "logging_steps": curves.logging_steps, "max_steps": total_steps, "num_input_tokens_seen": 0,
             "num_train_epochs": 3, "save_steps": 500,
             "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                                "should_log": False, "should_save": True,
                                                                "should_training_stop": True}, "attributes": {}}},
             "total_flos": 2019803136.0, "train_batch_size": 4, "trial_name": None, "trial_params": None}
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def adapter_config(rank: int, alpha: int, dropout: float, targets: Sequence[str]) -> str:
    config = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "Qwen/Qwen2-7B-Instruct",
              "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
              "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": dropout,
              "modules_to_save": None, "peft_type": "LORA", "r": rank, "rank_pattern": {}, "revision": None,
              "target_modules": list(targets), "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False}
    return json.dumps(config, indent=2, sort_keys=True)


def write_run(run_dir: Path, curves: Curves, *, config: dict[str, Any] | None = None, finished: bool = True,
              total_steps: int | None = None, vram: bool = False, predict: dict[str, float] | None = None,
              checkpoint_every: int = 0, adapter: bool = True) -> Path:
    """A LoRA SFT output_dir: finished (state, results, adapter) or still running (log + checkpoints)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    total = total_steps or (curves.steps[-1] if curves.steps else 1)
    config = {**base_config(run_dir), **(config or {})}
    (run_dir / "lfgen_run.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    lines = trainer_log_lines(curves, total, finished=finished, vram=vram)
    (run_dir / "trainer_log.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    last_step = curves.steps[-1] if curves.steps else 0
    for step in range(checkpoint_every, last_step + 1, checkpoint_every) if checkpoint_every else ():
        (run_dir / f"checkpoint-{step}").mkdir(exist_ok=True)
        (run_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(
            trainer_state(curves, total, step, finished=False), encoding="utf-8")
    if not finished:
        return run_dir
    (run_dir / "trainer_state.json").write_text(trainer_state(curves, total, finished=True), encoding="utf-8")
    train = {"epoch": 3.0, "total_flos": 2019803136.0, "train_loss": sum(curves.loss) / max(1, len(curves.loss)),
             **_train_speed(curves, total)}
    results = dict(train)
    _write_json(run_dir / "train_results.json", train)
    if curves.eval:
        final = curves.eval[max(curves.eval)]
        evaluation = {"epoch": 3.0, "eval_loss": final, "eval_runtime": 1.25, "eval_samples_per_second": 40.0,
                      "eval_steps_per_second": 5.0}
        _write_json(run_dir / "eval_results.json", evaluation)
        results.update(evaluation)
    if predict:
        prediction = {**predict, "predict_runtime": 12.5, "predict_samples_per_second": 4.0,
                      "predict_steps_per_second": 0.5}
        _write_json(run_dir / "predict_results.json", prediction)
        results.update(prediction)
    _write_json(run_dir / "all_results.json", results)
    if adapter:
        targets = str(config["lora_target"]).split(",") if config["lora_target"] != "all" else \
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        (run_dir / "adapter_config.json").write_text(
            adapter_config(config["lora_rank"], config["lora_alpha"], config["lora_dropout"], targets),
            encoding="utf-8")
    return run_dir


def base_config(output_dir: Path) -> dict[str, Any]:
    """The flat LlamaFactory YAML an lfgen preset writes (a800-like)."""
    return {"model_name_or_path": "Qwen/Qwen2-7B-Instruct", "stage": "sft", "do_train": True,
            "finetuning_type": "lora", "lora_rank": 64, "lora_alpha": 128, "lora_dropout": 0.1, "lora_target": "all",
            "dataset": "alpaca_en_demo", "template": "qwen", "cutoff_len": 2048, "output_dir": str(output_dir),
            "logging_steps": 10, "save_steps": 500, "report_to": "tensorboard", "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 8, "learning_rate": 2.0e-4, "num_train_epochs": 3.0,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True, "max_grad_norm": 1.0,
            "val_size": 0.05, "eval_strategy": "steps", "eval_steps": 200}


# --- synthetic curves -------------------------------------------------------------------------------


def decay(n: int, start: float = 2.5, end: float = 0.8, tau: float = 0.25, noise: float = 0.01,
          seed: int = 0) -> list[float]:
    """A healthy loss: fast fall, then flat; *tau* as a fraction of the run; multiplicative noise."""
    import random

    rnd = random.Random(seed)
    return [(end + (start - end) * math.exp(-i / (tau * n))) * (1 + rnd.uniform(-noise, noise)) for i in range(n)]


def evals_at(steps: Sequence[int], f: Callable[[int], float]) -> dict[int, float]:
    return {s: f(s) for s in steps}


def _lr(curves: Curves, i: int, total_steps: int) -> float:
    if curves.lr is not None:
        return curves.lr[i]
    step = (i + 1) * curves.logging_steps
    return 2e-4 * 0.5 * (1 + math.cos(math.pi * step / total_steps))  # cosine, as the presets use


def _train_speed(curves: Curves, total_steps: int) -> dict[str, float]:
    runtime = total_steps * curves.seconds_per_step
    speed = round(curves.samples_per_step / curves.seconds_per_step, 3)
    return {"train_runtime": runtime, "train_samples_per_second": speed,
            "train_steps_per_second": round(1 / curves.seconds_per_step, 3)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")
