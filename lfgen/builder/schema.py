"""lfgen's own schema for the LlamaFactory keys it knows: types, choices and ranges.

LlamaFactory's parser does not type-check YAML values (``lora_rank: "abc"`` passes it),
so lfgen does, strictly (no coercion: ``8.5`` is not an integer). Keys outside this
schema are checked against the LlamaFactory catalog (``lfgen.catalogs.llamafactory``): is the key
known, does its value have the dataclass's type and one of its choices.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lfgen.errors import did_you_mean, validation_problems
from lfgen.catalogs.llamafactory import Catalog
from lfgen.models import vlm

# Quantization bits LlamaFactory accepts per method at load time (model/model_utils/quantization.py).
QUANTIZATION_BITS = {"bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}

_pos = Field(default=None, gt=0)


class TrainConfig(BaseModel):
    """The keys lfgen writes or reasons about, with the ranges that make sense for LoRA SFT."""

    model_config = ConfigDict(extra="allow", strict=True)

    model_name_or_path: str = Field(min_length=1)
    adapter_name_or_path: str | None = None
    template: str | None = Field(default=None, min_length=1)
    stage: Literal["pt", "sft", "rm", "ppo", "dpo", "kto"] = "sft"
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = "lora"
    do_train: bool | None = None
    lora_rank: int = Field(default=8, gt=0)
    lora_alpha: int | None = _pos
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target: str = Field(default="all", min_length=1)
    dataset: str | None = Field(default=None, min_length=1)
    eval_dataset: str | None = Field(default=None, min_length=1)
    dataset_dir: str | None = Field(default=None, min_length=1)
    cutoff_len: int = Field(default=2048, gt=0)
    max_samples: int | None = _pos
    val_size: float = Field(default=0.0, ge=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    num_train_epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1, ge=-1)
    per_device_train_batch_size: int = Field(default=8, ge=1)
    per_device_eval_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)
    warmup_steps: float = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2", "fa3"] = "auto"
    quantization_bit: int | None = Field(default=None, ge=1, le=8)
    quantization_method: str = "bnb"
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    save_strategy: Literal["no", "steps", "epoch", "best"] = "steps"
    eval_steps: float | None = _pos
    logging_steps: float = Field(default=500, gt=0)
    save_steps: float = Field(default=500, gt=0)
    save_total_limit: int | None = _pos
    output_dir: str = Field(default="trainer_output", min_length=1)
    report_to: str | list[str] | None = None
    plot_loss: bool = False
    use_cpu: bool = False
    disable_gradient_checkpointing: bool = False


def _cross_field_problems(config: dict[str, Any]) -> list[str]:
    """Rules between keys; run on the raw mapping so they show even when a field has a type error."""
    get = config.get
    problems = []
    if get("bf16") is True and get("fp16") is True:
        problems.append("bf16, fp16: both are true; keep one mixed precision (bf16 where the GPU has it)")
    val_size = get("val_size")
    if isinstance(val_size, float) and not 0 <= val_size < 1:
        problems.append(f"val_size: a fraction must be in [0, 1) (got {val_size}); or give a row count")
    bits, method = get("quantization_bit"), get("quantization_method", "bnb")
    if isinstance(bits, int) and not isinstance(bits, bool):
        if get("finetuning_type", "lora") not in ("lora", "oft"):
            problems.append(f"quantization_bit: only works with finetuning_type lora or oft "
                            f"(got {get('finetuning_type')!r})")
        allowed = QUANTIZATION_BITS.get(method)
        if allowed and bits not in allowed:
            problems.append(f"quantization_bit: {method} supports {', '.join(map(str, allowed))} bits (got {bits}); "
                            "4 is QLoRA's usual choice")
    if get("pure_bf16") is True and "z3" in str(get("deepspeed") or "").replace("zero3", "z3"):
        problems.append("pure_bf16: LlamaFactory refuses it with DeepSpeed ZeRO-3; use bf16 or ZeRO-2")
    strategy = get("eval_strategy", "no")
    if strategy not in ("no", None) and not val_size and not get("eval_dataset"):
        problems.append(f"eval_strategy: {strategy!r} needs eval data; set val_size (e.g. 0.05) or eval_dataset, "
                        "or eval_strategy: no")
    return problems


KNOWN_KEYS = frozenset(TrainConfig.model_fields)


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not isinstance(part, int) or len(loc) == 1)


def _field_problems(exc: ValidationError) -> list[str]:
    return validation_problems(exc, name=_key, missing="required; LlamaFactory needs it", one_per_field=True)


def _one_of(value: Any, choices: tuple[Any, ...]) -> str:
    names = [str(c) for c in choices]
    close = did_you_mean(str(value), names)
    shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + f", ... ({len(names)} in all)"
    return f"one of {shown}{close}"


def _catalog_problems(config: dict[str, Any], catalog: Catalog) -> list[str]:
    lines = []
    for key, value in config.items():
        if key in KNOWN_KEYS:
            continue
        spec = catalog.keys.get(key)
        if spec is None:
            removed = vlm.removed_key(key)
            lines.append(f"{key}: {removed}" if removed else
                         f"{key}: not a LlamaFactory {catalog.version} key{did_you_mean(key, catalog.keys)}")
            continue
        if value is None:
            continue
        expected = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}.get(spec.type)
        if expected and (not isinstance(value, expected) or (spec.type != "bool" and isinstance(value, bool))):
            lines.append(f"{key}: must be {'true or false' if spec.type == 'bool' else 'a ' + spec.type} "
                         f"(got {_describe(value)})")
        elif spec.choices and value not in spec.choices:
            lines.append(f"{key}: must be {_one_of(value, spec.choices)} (got {_describe(value)})")
    return lines


def check(config: dict[str, Any], catalog: Catalog) -> list[str]:
    """Every schema problem of one config, one line each: ``key: what is wrong (got value)``."""
    try:
        TrainConfig.model_validate(config)
        problems: list[str] = []
    except ValidationError as exc:
        problems = _field_problems(exc)
    return problems + _cross_field_problems(config) + _catalog_problems(config, catalog)
