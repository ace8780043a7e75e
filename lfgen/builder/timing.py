"""The time and cost side of a build: a LlamaFactory config -> ``lfgen.models.time`` with the data's real
lengths and the run's schedule, and the price of its GPU-hours (``lfgen.catalogs.prices``).

The method and stage come from the config's own keys (finetuning_type, quantization_bit, stage, pref_loss),
so any config LlamaFactory accepts gets the estimate its keys describe. ``estimate_config_time`` is the one
entry point: explain, sweep/tune dry runs, status's pending runs and tune's --budget call it.

Stored throughput corrections (``lfgen calibrate``: ``time|GPU|method`` entries of the calibration file) scale the
training and evaluation seconds by the measured / estimated ratio of the user's own runs and add the measured
start-up (process start, imports, model and data loading, the last save), so ``wall_s`` is a run's whole GPU time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lfgen.errors import InputError

# TimeSettings keys that MemorySettings (estimates.settings_for) already reads from the config.
_SHARED = ("micro_batch", "num_gpus", "cutoff_len", "finetuning_type", "lora_rank", "lora_target", "additional_target",
           "use_dora", "oft_rank", "oft_block_size", "freeze_trainable_layers", "freeze_trainable_modules",
           "freeze_extra_modules", "use_llama_pro", "quantization_bit", "compute_dtype", "pure_bf16", "optim",
           "gradient_checkpointing", "flash_attn", "enable_liger_kernel")
LF_MAX_NEW_TOKENS = 1024  # LlamaFactory's GeneratingArguments default


@dataclass
class RunCost:
    """explain's ``time``, ``cost`` and ``time_basis`` objects, and why one is missing."""

    time: dict[str, Any] | None
    cost: dict[str, Any] | None
    basis: dict[str, Any] | None
    note: str = ""
    num_gpus: int = 1

    @property
    def wall_s(self) -> float | None:
        """The run's whole time on its GPUs: training, evaluation and, when calibrated, the measured start-up."""
        if self.time is None:
            return None
        return self.time["train_s"] + self.time["eval_s"] + (self.basis or {}).get("startup_s", 0.0)

    @property
    def high_wall_s(self) -> float | None:
        """The range's high end of ``wall_s`` (what a budget must allow for)."""
        if self.time is None:
            return None
        return self.time["high_s"]

    @property
    def gpu_hours(self) -> float | None:
        return None if self.wall_s is None else self.wall_s * self.num_gpus / 3600


TIME_KEY = "time"  # calibration entries of throughput: "time|GPU|method" (memory's are "GPU|family")


def time_key(gpu: str, method: str) -> str:
    return f"{TIME_KEY}|{gpu}|{method}"


def time_correction(gpu: str, method: str) -> dict[str, Any] | None:
    """The stored throughput correction for runs of *method* on *gpu* (lfgen calibrate), if any:
    ``{"factor": measured / estimated seconds, "runs": n, "startup_s": seconds or absent, "updated": ...}``."""
    from lfgen.builder.estimates import load_calibration

    return load_calibration().get(time_key(gpu, method))


def _calibrated(found: Any, gpu: str, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """explain's time and basis objects, scaled by the stored correction when there is one."""
    time, basis = found.to_json(), found.basis()
    entry = time_correction(gpu, method)
    if entry is None:
        return time, basis
    from lfgen.models.step_time import constants

    factor, startup = float(entry["factor"]), float(entry.get("startup_s") or 0.0)
    total = found.total_s * factor + startup
    bounds = constants()["range"]  # a measured speed now: the fit rows' own spread, never the derived one's; the
    # start-up varies as much (imports, loading, a busy disk), so the range spans it too
    time.update(train_s=round(found.train_s * factor, 1), eval_s=round(found.eval_s * factor, 1),
                low_s=round(total * bounds["low"], 1), high_s=round(total * bounds["high"], 1),
                tokens_per_s=round(found.tokens_per_s / factor, 1))
    runs = int(entry.get("runs", 0))
    basis["calibration"] = {"factor": factor, "runs": runs, "startup_s": startup, "key": time_key(gpu, method)}
    basis["startup_s"] = startup
    basis["notes"] = [*basis["notes"], f"calibrated from {runs} run(s) on {gpu} ({method}): x{factor:.3g} the "
                      f"model's seconds" + (f", plus {startup:.0f}s start-up per run" if startup else "")
                      + " (lfgen calibrate)"]
    return time, basis


def time_settings(config: dict[str, Any], num_gpus: int) -> Any:
    """TimeSettings from a LlamaFactory config (its keys, LlamaFactory's defaults for the rest)."""
    from lfgen.builder.estimates import is_packed, settings_for
    from lfgen.models.time import settings_from

    shared = settings_for(config, num_gpus)
    values = {key: shared[key] for key in _SHARED}
    values["cutoff_len"] = int(config.get("cutoff_len", 2048))  # the memory's longest sample is not the time's
    values.update(gradient_accumulation=int(config.get("gradient_accumulation_steps", 1)),
                  packing=is_packed(config),
                  # transformers 5: train_sampling_strategy; 4.x: group_by_length
                  group_by_length=config.get("train_sampling_strategy") == "group_by_length"
                  or bool(config.get("group_by_length", False)),
                  stage=config.get("stage", "sft"), pref_loss=str(config.get("pref_loss", "sigmoid")),
                  torch_compile=bool(config.get("torch_compile", False)))
    return settings_from(**values)


def schedule(config: dict[str, Any], samples: int) -> Any:
    """The run's schedule: training rows after val_size, epochs or max_steps, evaluations."""
    from lfgen.models.time import Schedule

    val = config.get("val_size", 0) or 0
    held = math.ceil(val * samples) if 0 < val < 1 else int(val)
    strategy = str(config.get("eval_strategy", "no"))
    evaluates = strategy != "no" and held > 0
    max_steps = config.get("max_steps")
    return Schedule(samples=max(1, samples - held), epochs=float(config.get("num_train_epochs", 3.0)),
                    max_steps=max_steps if isinstance(max_steps, int) and max_steps > 0 else None,
                    eval_samples=held if evaluates else 0,
                    eval_steps=int(config.get("eval_steps", 500)) if strategy == "steps" else None,
                    eval_batch=int(config.get("per_device_eval_batch_size", 8)),
                    generate_tokens=int(config.get("max_new_tokens", LF_MAX_NEW_TOKENS))
                    if config.get("predict_with_generate") else 0)


def length_model(lengths: Any) -> Any:
    """The log-normal of ``lfgen data``'s measured lengths (p50, p90, max), or None when they are unknown."""
    from lfgen.models.lengths import LengthModel

    if lengths is None or not getattr(lengths, "count", 0):
        return None
    return LengthModel.from_percentiles(lengths.p50, lengths.p90, lengths.max,
                                        source=f"{lengths.count:,} samples, lengths {lengths.method}")


def estimate_config_time(model: str, config: dict[str, Any], gpu: Any, num_gpus: int, samples: int | None,
                         lengths: Any = None, price: float | None = None, *, calibrated: bool = True) -> RunCost:
    """Time and cost of training *config* on *num_gpus* x *gpu*; missing parts come back None with the reason.
    The stored throughput correction for the GPU and method applies unless not *calibrated* (lfgen calibrate's
    own comparison)."""
    from lfgen.builder.estimates import zero_settings
    from lfgen.builder.model import spec_of
    from lfgen.catalogs.prices import price_for
    from lfgen.models.time import estimate_time

    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")  # bad input is an error even when no time can be estimated
    if gpu is None or getattr(gpu, "peak", None) is None:
        return RunCost(None, None, None, "no time estimate: pass --gpu NAME (the catalog has each GPU's peak "
                                         "TFLOPS and bandwidth; --gpu-mem gives none)")
    if not samples:
        return RunCost(None, None, None, "no time estimate: the number of training samples is unknown; pass "
                                         "--samples N or --dataset-dir DIR")
    try:
        found = estimate_time(spec_of(model), gpu, time_settings(config, num_gpus), schedule(config, samples),
                              length_model(lengths))
    except InputError as exc:
        return RunCost(None, None, None, f"no time estimate: {exc}", num_gpus)
    time, basis = _calibrated(found, gpu.name, time_settings(config, num_gpus).method) if calibrated else \
        (found.to_json(), found.basis())
    if spec_of(model).composite:  # the language model's steps only (R-TIME); image tokens are in its sequence
        basis["notes"] = [*basis["notes"], "vision-language model: the vision tower's and projector's compute is not "
                          "counted (the language model's, with the image tokens in its sequence, is)"]
    offload = zero_settings(config)
    if offload["zero_stage"] and "cpu" in (offload["offload_optimizer"], offload["offload_param"]):  # R-MULTI-DS
        basis["notes"] = [*basis["notes"], "CPU offload: the states' trips over PCIe and Adam's step on the CPU each "
                          "step are not counted: the run is slower than this"]
    result = RunCost(time, None, basis, num_gpus=num_gpus)
    known = price_for(gpu.name, price)
    if known is None:
        result.note = f"no cost: lfgen has no default price for {gpu.name}; pass --price USD_PER_GPU_HOUR"
    else:
        usd = result.gpu_hours * known.usd_per_gpu_hour
        result.cost = {"usd": round(usd, 2), "usd_per_gpu_hour": known.usd_per_gpu_hour, "price_source": known.source}
    return result
