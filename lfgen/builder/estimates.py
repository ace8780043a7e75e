"""The model-aware side of a build: the model's architecture, its real target modules, trainable
parameters, the memory estimate and fit-to-GPU sizing, with stored calibration applied.

This is the glue between a config (``lfgen.builder.steps``) and ``lfgen.models``; it never downloads:
a model is a local folder with config.json or an id of the offline catalog (presets/models.yaml).
"""

from __future__ import annotations

import json
import os
import shlex
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder.model import model_spec, spec_of
from lfgen.builder.shapes import of_config
from lfgen.builder.targets import model_order
from lfgen.errors import InputError, StateError


def _zero_stage(config: dict[str, Any]) -> int:
    """ZeRO stage from the DeepSpeed config's name; FSDP's full_shard shards like ZeRO-3, shard_grad_op like 2."""
    found = re.search(r"z(ero)?[_-]?([0-3])", str(config.get("deepspeed") or ""))
    if found:
        return int(found.group(2))
    fsdp = " ".join(config["fsdp"]) if isinstance(config.get("fsdp"), list) else str(config.get("fsdp") or "")
    return 3 if "full_shard" in fsdp else 2 if "shard_grad_op" in fsdp else 0


_DEVICES = ("none", "cpu", "nvme")


def _deepspeed_json(value: Any) -> dict[str, Any] | None:
    """The DeepSpeed config *value* names (a dict as given; a path from the working directory, as LlamaFactory reads
    it), or None when it cannot be read: the stage and offload then come from the name, as LlamaFactory's files (and
    lfgen's copies, lfgen/data/deepspeed) are named."""
    if isinstance(value, dict):
        return value
    try:
        found = json.loads(Path(str(value)).read_text(encoding="utf-8")) if value else None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def zero_settings(config: dict[str, Any]) -> dict[str, Any]:
    """zero_stage, offload_optimizer and offload_param (R-MULTI-DS) from the config's deepspeed file: its
    zero_optimization.stage and offload_*.device where the file can be read, else the name's z2/z3 and "offload"
    (LlamaFactory's ds_z3_offload_config.json offloads both, ds_z2_offload_config.json the optimizer)."""
    stage, name = _zero_stage(config), str(config.get("deepspeed") or "")
    offload = "cpu" if "offload" in Path(name).name else "none"
    values = {"zero_stage": stage, "offload_optimizer": offload, "offload_param": offload if stage == 3 else "none"}
    zero = (_deepspeed_json(config.get("deepspeed")) or {}).get("zero_optimization")
    if isinstance(zero, dict):
        if zero.get("stage") in (0, 1, 2, 3):
            values["zero_stage"] = zero["stage"]
        for key in ("offload_optimizer", "offload_param"):
            device = zero.get(key).get("device", "none") if isinstance(zero.get(key), dict) else "none"
            values[key] = str(device).lower() if str(device).lower() in _DEVICES else "none"
    return values


# Settings whose memory lfgen does not model: the estimate would be a wrong number, so it says so instead.
_UNMODELLED = {
    "use_galore": "GaLore projects the optimizer state", "use_apollo": "APOLLO keeps a low-rank optimizer state",
    "use_badam": "BAdam trains one block at a time", "use_adam_mini": "Adam-mini shares its second moments",
    "use_muon": "Muon keeps its own optimizer state", "use_unsloth": "Unsloth's kernels change the activations",
    "use_kt": "KTransformers offloads the experts to the CPU", "fp8": "FP8 training changes every dtype",
    "mixture_of_depths": "mixture-of-depths changes the layers",
}


def cannot_estimate(config: dict[str, Any]) -> str:
    """Why lfgen cannot estimate this training config's memory, or "" when it can."""
    from lfgen.builder.vlm_rules import cannot_train

    unsupported = cannot_train(str(config.get("model_name_or_path") or ""))
    if unsupported:
        return unsupported
    if config.get("stage", "sft") == "ppo":
        return "PPO holds a policy, a value head, a reference and a reward model at once; lfgen does not estimate it"
    if config.get("ref_model"):
        return (f"ref_model {config['ref_model']}: a separate reference model; lfgen sizes only a reference that is "
                "the model itself (R-STAGE-MEM)")
    for key, why in _UNMODELLED.items():
        if config.get(key):
            return f"{key}: {why}; lfgen does not estimate its memory"
    if "offload" in str(config.get("fsdp") or ""):  # DeepSpeed's offload is estimated (R-MULTI-DS), FSDP's is not
        return ("FSDP's CPU offload moves the weights and optimizer state off the GPU; lfgen does not estimate it "
                "(it estimates DeepSpeed's: ds_z3_offload_config.json)")
    bits = config.get("quantization_bit")
    if bits is not None and (bits not in (4, 8) or config.get("quantization_method", "bnb") != "bnb"):
        return f"quantization_bit {bits} ({config.get('quantization_method', 'bnb')}): the estimate covers " \
               "bitsandbytes 4 and 8 bits"
    try:
        from lfgen.models.memory import _optimizer_bytes

        _optimizer_bytes(str(config.get("optim", "adamw_torch")), False)
    except InputError as exc:
        return str(exc)
    return ""


def is_packed(config: dict[str, Any]) -> bool:
    """Packing fills every sequence to cutoff_len (LlamaFactory packs pre-training by default)."""
    packing = config.get("packing")
    return bool(config.get("neat_packing")) or (config.get("stage", "sft") == "pt" if packing is None else bool(packing))


def image_load(config: dict[str, Any]) -> tuple[int, int]:
    """(vision patches, image tokens) of one sample of a vision-language run when the data's images are not
    measured: one square image of image_max_pixels (the largest the cap lets through, R-VLM-PIXELS); (0, 0) for
    a text model."""
    from lfgen.models.image_tokens import image_tokens, rule_for, vision_patches
    from lfgen.models.vlm import defaults

    model = config.get("model_name_or_path")
    try:
        rule = rule_for(str(model)) if model else None
    except InputError:
        rule = None
    if rule is None:
        return 0, 0
    pixels = int(config.get("image_max_pixels") or defaults()["image_max_pixels"])
    side = int(pixels ** 0.5)
    tokens = image_tokens(rule, side, side, pixels, config.get("image_min_pixels"))
    return vision_patches(rule, tokens), tokens


def sequence_length(config: dict[str, Any], seq_len: int | None) -> int:
    """The tokens per sample the peak batch holds: cutoff_len for a packed run; for a padded run the
    longest sample (*seq_len*, measured by R-DATA-CUTOFF) when it is shorter than cutoff_len."""
    cutoff = int(config.get("cutoff_len", 2048))
    if seq_len is None or is_packed(config):
        return cutoff
    return max(1, min(cutoff, int(seq_len)))


_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def checkpoint_dtype(model: str) -> str:
    """The dtype LlamaFactory 0.9.5 loads *model*'s weights in (torch_dtype "auto": the checkpoint's own): a local
    config.json's torch_dtype (transformers 5: dtype), a catalog entry's, else bf16 (nearly every published
    checkpoint is 16-bit)."""
    try:
        config = spec_of(model).config
    except (InputError, OSError):
        return "bf16"
    text = str(config.get("torch_dtype") or config.get("dtype") or "").removeprefix("torch.")
    return _DTYPES.get(text, "bf16")


def settings_for(config: dict[str, Any], num_gpus: int, seq_len: int | None = None,
                 images: tuple[int, int] | None = None) -> dict[str, Any]:
    """MemorySettings values from a LlamaFactory config (*seq_len*: the data's longest sample, see
    ``sequence_length``; *images*: the vision patches and image tokens of the peak sample, see ``image_load``)."""
    from lfgen.models.towers import FREEZE_KEYS

    loaded = checkpoint_dtype(str(config.get("model_name_or_path", "")))
    # bf16/fp16 autocast the forward; with neither, it runs in the dtype the weights load in (R-HW-FP16-AMP)
    dtype = "bf16" if config.get("bf16") or config.get("pure_bf16") else "fp16" if config.get("fp16") else loaded
    values = {
        "micro_batch": config.get("per_device_train_batch_size", 8),
        "cutoff_len": sequence_length(config, seq_len),
        "lora_rank": config.get("lora_rank", 8),
        "lora_target": config.get("lora_target", "all"),
        "additional_target": config.get("additional_target"),
        "lora_dropout": config.get("lora_dropout", 0.0),
        "use_dora": bool(config.get("use_dora", False)),
        "compute_dtype": dtype,
        "weights_dtype": loaded,
        "quantization_bit": config.get("quantization_bit"),
        "double_quantization": bool(config.get("double_quantization", True)),
        "gradient_checkpointing": not config.get("disable_gradient_checkpointing", False),
        "pure_bf16": bool(config.get("pure_bf16", False)),
        "optim": config.get("optim", "adamw_torch"),
        **zero_settings(config),  # the stage and CPU offload of the deepspeed file (R-MULTI-DS)
        "num_gpus": num_gpus,
        "flash_attn": config.get("flash_attn", "auto"),
        "enable_liger_kernel": bool(config.get("enable_liger_kernel", False)),
        "finetuning_type": config.get("finetuning_type", "lora"),
        "freeze_trainable_layers": config.get("freeze_trainable_layers", 2),
        "freeze_trainable_modules": config.get("freeze_trainable_modules", "all"),
        "freeze_extra_modules": config.get("freeze_extra_modules"),
        "use_llama_pro": bool(config.get("use_llama_pro", False)),
        "oft_rank": config.get("oft_rank", 0),
        "oft_block_size": config.get("oft_block_size", 32),
        "deepspeed": bool(config.get("deepspeed")),
        "variable_lengths": not is_packed(config),  # real data padded per batch: the allocator ratchets
        **of_config(config).memory,  # pairs, the reference forward and copy (R-STAGE-MEM)
        **{key: bool(config[key]) for key in FREEZE_KEYS if key in config},  # what trains in each tower
    }
    patches, tokens = images if images is not None else image_load(config)
    values.update(image_patches=patches, image_tokens=tokens)
    if values["quantization_bit"] is not None and values["quantization_bit"] not in (4, 8):
        raise InputError(f"quantization_bit: the estimate covers bitsandbytes 4 and 8 bits "
                         f"(got {values['quantization_bit']})")
    return values


# --- calibration ----------------------------------------------------------------------------------


def calibration_path() -> Path:
    env = os.environ.get("LFGEN_CALIBRATION")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "lfgen" / "calibration.json"


def load_calibration() -> dict[str, Any]:
    """The stored factors ({"GPU|family": {"factor": f, "runs": n, "updated": ...}}); {} when there are none.
    A file that is not valid JSON or not of that shape is a StateError: lfgen never replaces it."""
    path = calibration_path()
    move = f"mv {shlex.quote(str(path))} {shlex.quote(f'{path}.broken')}"
    fix = (f"lfgen leaves it as it is and saves nothing into it: move it away ({move}) and run lfgen calibrate "
           "again, or point $LFGEN_CALIBRATION at another file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: the calibration file is not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise StateError(f"{path}: the calibration file cannot be read ({exc.strerror}); {fix}") from None
    if not isinstance(data, dict):
        raise StateError(f"{path}: the calibration file holds a {type(data).__name__}, not an object of "
                         f'"GPU|family": {{"factor": ...}}; {fix}')
    for key, entry in data.items():
        factor = entry.get("factor") if isinstance(entry, dict) else None
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0 \
                or factor == float("inf"):
            raise StateError(f"{path}: {key}: the factor must be a number above 0 "
                             f"(got {json.dumps(entry)[:60]}); {fix}")
        startup = entry.get("startup_s", 0.0)  # time corrections (lfgen calibrate): the measured start-up
        if not isinstance(startup, (int, float)) or isinstance(startup, bool) or not 0 <= startup < float("inf"):
            raise StateError(f"{path}: {key}: startup_s must be a number of seconds, 0 or more "
                             f"(got {json.dumps(startup)[:60]}); {fix}")
    return data


def calibration_key(gpu: str, model_type: str) -> str:
    return f"{gpu}|{model_type}"


@dataclass
class Estimate:
    """What explain reports about the model and memory; ``to_json`` is the documented shape."""

    model: dict[str, Any]
    target_modules: list[str]
    trainable_params: int
    memory_gib: dict[str, float]
    gpu: dict[str, Any] | None
    fits: bool | None
    notes: list[str] = field(default_factory=list)
    calibration: float | None = None
    finetuning_type: str = "lora"

    @property
    def peak_gib(self) -> float:
        """The peak per GPU, as nvidia-smi would show it (calibrated when a factor is stored)."""
        return self.memory_gib.get("calibrated_total", self.memory_gib["total"])

    @property
    def fit_gib(self) -> float:
        """What must fit: the peak less the cache the allocator releases before an out-of-memory."""
        return self.peak_gib - self.memory_gib.get("releasable_cache", 0.0)

    @property
    def peak_range(self):
        """Where the peak likely lies: the range of measured / estimated on published peaks (memory_range); None
        once a calibration factor from the user's own runs has corrected the estimate the range describes."""
        from lfgen.models.memory_range import peak_range

        return None if self.calibration else peak_range(self.peak_gib, self.fit_gib)

    @property
    def unsure_fit_gib(self) -> float | None:
        """What must fit at the range's high end, when the run fits at the estimate but not there (the dangerous
        direction: "fits", then an out-of-memory); None otherwise."""
        span = self.peak_range
        return span.fit_high if span and self.fits and span.fit_high > self.gpu["memory_gib"] else None

    def to_json(self) -> dict[str, Any]:
        span = self.peak_range
        return {"model": self.model, "finetuning_type": self.finetuning_type, "target_modules": self.target_modules,
                "trainable_params": self.trainable_params, "memory_gib": self.memory_gib,
                "memory_range_gib": span.to_json() if span else None, "gpu": self.gpu,
                "fits": self.fits, "notes": self.notes, "calibration": self.calibration}


def estimate(model: str, config: dict[str, Any], gpu_name: str | None, gpu_gib: float | None, num_gpus: int,
             headroom: float | None = None, seq_len: int | None = None,
             images: tuple[int, int] | None = None) -> Estimate:
    """Trainable parameters and peak memory per GPU for *config*, calibrated when factors are stored;
    it fits when it leaves *headroom* (R-HW-HEADROOM's by default) of *gpu_gib* free."""
    from lfgen.catalogs.rules import headroom as registry_headroom

    from lfgen.models import estimate_memory
    from lfgen.models.trainable import count_trainable

    from lfgen.models.towers import split_note

    spec = spec_of(model)
    values = settings_for(config, num_gpus, seq_len, images)
    count = count_trainable(spec, **values)
    memory = estimate_memory(spec, **values)
    breakdown = {k: round(v, 3) for k, v in memory.breakdown.items()}
    if memory.releasable_gib:  # in overhead: cache the allocator frees before an OOM, so it does not decide the fit
        breakdown["releasable_cache"] = round(memory.releasable_gib, 3)
    factor = factor_for(gpu_name, model)
    if factor:
        breakdown["calibrated_total"] = round(breakdown["total"] * factor, 3)
    total = breakdown.get("calibrated_total", breakdown["total"])
    headroom = registry_headroom() if headroom is None else headroom
    fits = None if gpu_gib is None else total - memory.releasable_gib <= gpu_gib * (1 - headroom)
    notes = [*count.notes, *memory.notes]
    if spec.composite:  # seed 000's "Text: ..., Vision: ..." for the config's freeze keys (R-VLM-FREEZE)
        notes.insert(0, split_note(spec, **values))
    if values["cutoff_len"] != config.get("cutoff_len", 2048):
        notes.append(f"padded batches: the longest sample is {values['cutoff_len']:,} tokens, so the peak batch "
                     f"holds {values['cutoff_len']:,} tokens per sample, not cutoff_len {config.get('cutoff_len', 2048):,}"
                     " (R-DATA-CUTOFF)")
    return Estimate(model={"id": spec.name, "architecture": spec.composite or spec.model_type,
                           "params": count.total_params, "source": spec.source},
                    target_modules=list(model_order(model, count.targets)) if count.adapted else list(count.targets),
                    trainable_params=count.trainable, memory_gib=breakdown,
                    gpu=None if gpu_name is None else {"name": gpu_name, "memory_gib": gpu_gib, "num_gpus": num_gpus,
                                                       "headroom": headroom},
                    fits=fits, notes=list(dict.fromkeys(notes)), calibration=factor,
                    finetuning_type=values["finetuning_type"])


def factor_for(gpu_name: str | None, model: str) -> float | None:
    """The stored measured/estimated ratio for this GPU and model family (lfgen calibrate), if any."""
    if not gpu_name:
        return None
    return load_calibration().get(calibration_key(gpu_name, spec_of(model).model_type), {}).get("factor")


def fit(model: str, config: dict[str, Any], gpu_name: str | None, gpu_gib: float, num_gpus: int, headroom: float,
        effective: int, seq_len: int | None = None, images: tuple[int, int] | None = None):
    """The largest micro-batch that fits (models.fit_micro_batch); a calibration factor f scales every
    estimate, which is the same as dividing the memory it must fit in by f."""
    from lfgen.models import fit_micro_batch

    values = settings_for(config, num_gpus, seq_len, images)
    values.pop("micro_batch")
    factor = factor_for(gpu_name, model) or 1.0
    return fit_micro_batch(spec_of(model), gpu_gib / factor, effective_batch=effective, headroom=headroom, **values)
