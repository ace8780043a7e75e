"""Run shapes: a stage (sft, pt, dpo, kto, orpo, simpo, rm; ppo is explained, not built) x a method (lora, oft,
freeze, full), from ``presets/shapes.yaml``.

A ``Shape`` answers every question the pipeline asks about what kind of run it builds: which rules do not apply
(``skipped``, with why), which keys it writes and which it does not read (``reads``), its learning-rate rule and
value (``learning_rate``), its memory terms (``memory``), the data it needs (``data``), what it is tuned by
(``objective``) and the default values of a sweep axis (``axis_values``). The build steps call these; none of
them tests a stage or a method by name. ORPO and SimPO are LlamaFactory's ``stage: dpo`` with a ``pref_loss``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lfgen.catalogs import rules
from lfgen.errors import InputError
from lfgen.resources import load_data

LR_RULES = ("R-LR", "R-LR-RANK", "R-LR-SIZE")  # the LoRA SFT learning-rate rules


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Memory(_Strict):
    """What one micro-batch row costs beyond SFT (R-STAGE-MEM): sequences the training forward keeps, sequences
    one no-grad reference forward holds, and the loss over the vocabulary (causal LM, preference log-probs, value head)."""

    sequences: int = 1
    reference_sequences: int = 0
    loss: Literal["causal", "logps", "value"] = "causal"


class Stage(_Strict):
    label: str
    stage: str  # LlamaFactory's stage key
    pref_loss: str | None = None  # the pref_loss this stage writes
    losses: tuple[str, ...] = ()  # every pref_loss that is this stage
    data: Literal["supervised", "text", "pairwise", "feedback", "prompts"]
    dataset: str  # LlamaFactory's demo dataset of that kind
    lr: str  # R-STAGE-LR, method (the method's rule), none
    beta: bool = False
    epochs: bool = False  # the epochs are this stage's (R-STAGE-DATA), not R-DATA-EPOCHS' bands
    writes: tuple[str, ...] = ()
    drops: dict[str, str] = {}
    objective: str
    memory: Memory = Memory()
    skips: dict[str, str] = {}
    buildable: bool = True


class Method(_Strict):
    label: str
    family: Literal["adapter", "full"]
    lr: str
    quantize: bool = False
    writes: tuple[str, ...] = ()
    skips: dict[str, str] = {}


class Modality(_Strict):
    """What the model reads besides text (RULES.md §8): the keys it writes, each stage's demo data, and the keys
    the fit to the GPU steps down before micro-batch 1 is given up (R-VLM-PIXELS)."""

    label: str
    writes: tuple[str, ...] = ()
    datasets: dict[str, str] = {}
    step_down: tuple[str, ...] = ()


class _Registry(_Strict):
    stages: dict[str, Stage]
    methods: dict[str, Method]
    modalities: dict[str, Modality]
    readers: dict[str, tuple[str, ...]]


@functools.cache
def registry() -> _Registry:
    return _Registry.model_validate(load_data("shapes.yaml"))


def stage_names(buildable: bool = True) -> list[str]:
    return [name for name, stage in registry().stages.items() if stage.buildable or not buildable]


def method_names() -> list[str]:
    return list(registry().methods)


@dataclass(frozen=True)
class Rate:
    """A shape's learning rate: the rule, the value, its range (None: a point rule), and why."""

    rule: str
    value: float
    range: tuple[float, float] | None
    reason: str
    alternative: str | None = None


@dataclass(frozen=True)
class Shape:
    """One stage x one method, on a text or a vision-language model."""

    stage_name: str
    method_name: str
    modality_name: str = "text"

    @property
    def stage(self) -> Stage:
        return registry().stages[self.stage_name]

    @property
    def method(self) -> Method:
        return registry().methods[self.method_name]

    @property
    def modality(self) -> Modality:
        return registry().modalities[self.modality_name]

    @property
    def vision(self) -> bool:
        return self.modality_name == "vision"

    @property
    def name(self) -> str:
        suffix = "" if self.modality_name == "text" else f"-{self.modality_name}"
        return f"{self.method_name}-{self.stage_name}{suffix}"

    @property
    def label(self) -> str:
        prefix = f"{self.modality.label} " if self.modality.label else ""
        return f"{prefix}{self.method.label} {self.stage.label}"

    @property
    def dataset(self) -> str:
        """LlamaFactory's demo set for this stage on this modality (mllm_demo for vision-language SFT)."""
        return self.modality.datasets.get(self.stage_name, self.stage.dataset)

    @property
    def is_default(self) -> bool:
        """LoRA SFT: the shape the seeds describe."""
        return (self.stage_name, self.method_name) == ("sft", "lora")

    @property
    def lr_rule(self) -> str | None:
        rule = self.stage.lr if self.stage.lr != "method" else self.method.lr
        return None if rule == "none" else rule

    @property
    def skipped(self) -> dict[str, str]:
        """Rule id -> why its premise does not hold for this shape (explain lists them once)."""
        found = {**self.stage.skips, **self.method.skips}
        if self.lr_rule != "R-LR-RANK":
            why = (f"the seeds' rate and its rank and size scaling are LoRA SFT's; {self.label} trains at "
                   f"{self.lr_rule}'s rate" if self.lr_rule else f"lfgen has no learning-rate rule for {self.label}")
            found.update({rule_id: why for rule_id in LR_RULES if rule_id not in found})
        return found

    def applies(self, rule_id: str) -> bool:
        return rule_id not in self.skipped

    def reads(self, key: str) -> bool:
        """Whether this shape's stage or method reads *key* (keys no entry of ``readers`` names: always)."""
        readers = registry().readers.get(key)
        return readers is None or self.method_name in readers or self.stage_name in readers

    def readers_of(self, key: str) -> tuple[str, ...]:
        return registry().readers.get(key, ())

    @property
    def memory(self) -> dict[str, Any]:
        """MemorySettings values of this shape (R-STAGE-MEM): the reference is a copy for full-parameter methods."""
        memory = self.stage.memory
        reference = "none" if not memory.reference_sequences else (
            "copy" if self.method.family == "full" else "adapter")
        return {"sequences": memory.sequences, "reference": reference,
                "reference_sequences": memory.reference_sequences, "loss": memory.loss}

    @property
    def pairs(self) -> bool:
        """A micro-batch row is a pair of sequences."""
        return self.stage.memory.sequences == 2

    @property
    def objective(self) -> str:
        return self.stage.objective

    def beta(self) -> dict[str, Any] | None:
        """R-STAGE-BETA's row of this stage (value, sweep, range), or None when the stage has no pref_beta."""
        return rules.rule("R-STAGE-BETA").table("betas")[self.stage_name] if self.stage.beta else None

    def learning_rate(self, alpha: int | None = None, size: tuple[float | None, str] = (None, "")) -> Rate | None:
        """The shape's learning rate. LoRA SFT and pt: R-LR-SIZE's rate for the model *size* (billions, and how it
        is known) x 32 / *alpha* (R-LR-RANK); the rest a table value. None: no rule (PPO)."""
        rule = self.lr_rule
        if rule is None:
            return None
        if rule == "R-STAGE-LR":
            row = rules.rule(rule).table("rates")[self.stage_name]
            family = self.method.family
            low, high = row[f"{family}_range"]
            return Rate(rule, row[family], (low, high), f"{self.label}: {family}-parameter rate "
                        f"{row[family]:g} (R-STAGE-LR's range {low:g}-{high:g})")
        if rule == "R-METHOD-LR":
            spec = rules.rule(rule)
            key = "oft" if self.method_name == "oft" else "value"
            value, (low, high) = spec.table(key), spec.table(f"{key}_range" if key == "oft" else "range")
            why = ("LlamaFactory's OFT example rate" if key == "oft" else
                   "a tenth of the LoRA rate, LlamaFactory's full SFT example")
            return Rate(rule, value, (low, high), f"{self.label}: {value:g}, {why} (range {low:g}-{high:g})",
                        alternative="2e-4 is the seeds' LoRA rate (R-LR), about 10x too high without an adapter")
        return lora_rate(alpha or 16, size)

    def axis_values(self, axis: str, base_lr: float | None) -> list[Any] | None:
        """A sweep axis' default values for this shape: lr spans its band (or 0.5x / 1x / 2.5x a point rate, the
        seeds' 1e-4 / 2e-4 / 5e-4 around 2e-4), beta the stage's log-spaced values; None: the axis' own defaults."""
        if axis == "beta":
            beta = self.beta()
            if beta is None:
                raise InputError(f"beta: the base trains {self.label}, which has no pref_beta; sweep beta on a "
                                 "preference stage (--stage dpo, kto, orpo or simpo)")
            return list(beta["sweep"])
        if axis == "lr":
            rate = self.learning_rate()
            if rate is not None and rate.range is not None:
                low, high = rate.range
                return [low, significant(math.sqrt(low * high)), high]
            if base_lr is not None:  # the seed's 1e-4, 2e-4, 5e-4 as multiples of its 2e-4
                seed = load_data("sweeps.yaml")["axes"]["lr"]["values"]
                return [significant(base_lr * value / seed[1]) for value in seed]
        return None

    def tuning_axes(self, order: tuple[str, ...]) -> tuple[str, ...]:
        """Seed 000's *order* of sweep axes, kept to those this shape reads; else lr (and beta)."""
        kept = tuple(axis for axis in order if self.axis_problem(axis) is None)
        return kept or ("lr", *(("beta",) if self.stage.beta else ()))

    def axis_problem(self, axis: str) -> str | None:
        """Why a sweep axis means nothing for this shape (rank on a full fine-tune), or None."""
        if axis == "vision" and not self.vision:
            return ("vision: the base trains a text model, which has no vision tower; use a vision-language --model "
                    "(docs/vlm.md)")
        keys = {"rank": "lora_rank", "alpha": "lora_alpha", "dropout": "lora_dropout", "target": "lora_target"}
        if axis in keys and not self.reads(keys[axis]):
            return (f"{axis}: the base trains {self.label}, which does not read {keys[axis]}; sweep lr or epochs, or "
                    f"use a LoRA base (--method lora)")
        return None


def significant(value: float, digits: int = 2) -> float:
    """*value* to *digits* significant digits (7.4999e-05 -> 7.5e-05)."""
    return float(f"{value:.{digits}g}") if value else 0.0


def lora_rate(alpha: int, size: tuple[float | None, str]) -> Rate:
    """R-LR-RANK x R-LR-SIZE: the model's best rate at alpha 32, x 32 / alpha, capped (see presets/rules.yaml)."""
    spec, billions, how = rules.rule("R-LR-RANK"), size[0], size[1]
    reference, cap = spec.table("alpha_reference"), spec.table("cap")
    sizes = rules.rule("R-LR-SIZE").table("sizes")
    row = next(r for r in sizes if r["upto_b"] is None or (billions is not None and billions <= r["upto_b"]))
    raw = row["lr"] * reference / alpha
    value = significant(min(cap, raw))
    known = f"a {billions:g}B model ({how})" if billions is not None else f"a model of unknown size ({how})"
    reason = (f"R-LR-SIZE's {row['lr']:g} for {known}, the best LoRA rate at alpha {reference}; x {reference} / "
              f"alpha {alpha} = {significant(raw):g}" + (f", capped at {cap:g}, the top of the seeds' range (seed 001: "
                                                           "1e-3 oscillates)"
                                                           if raw > cap else "") +
              ": lr x alpha stays where it was measured best")
    return Rate("R-LR-RANK", value, None, reason,
                alternative="2e-4, the seeds' LoRA rate (R-LR, 1e-4 to 5e-4); pass --lr 2e-4")


_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")


def size_in_name(model: str) -> float | None:
    """Billions of parameters a model's name states (Qwen2.5-7B-Instruct: 7.0), or None."""
    found = _SIZE_IN_NAME.findall(str(model).rsplit("/", 1)[-1])
    return float(found[-1]) if found else None


def resolve(stage: str | None, method: str | None, pref_loss: str | None = None, modality: str = "text") -> Shape:
    """The shape of LlamaFactory values (stage, finetuning_type, pref_loss); an unknown value reads as LoRA SFT
    (lfgen's schema reports it)."""
    stage, method = str(stage or "sft"), str(method or "lora")
    found = "sft"
    for name, entry in registry().stages.items():
        if entry.stage == stage and (not entry.losses or str(pref_loss or "sigmoid") in entry.losses):
            found = name
            break
    return Shape(found, method if method in registry().methods else "lora", modality)


def modality_of(model: str) -> str:
    """"vision" for a vision-language model lfgen knows (a composite config.json, or a catalog id of one: its
    family in presets/vlm.yaml), else "text"."""
    from lfgen.builder.vlm_checks import model_type_of
    from lfgen.models import vlm

    if not model:
        return "text"
    try:
        found = model_type_of(model, None)
    except (OSError, RecursionError):  # a broken config.json: the model lookup reports it as one line
        return "text"
    return "vision" if found and vlm.family(found) is not None else "text"


def of_config(config: dict[str, Any]) -> Shape:
    return resolve(config.get("stage"), config.get("finetuning_type"), config.get("pref_loss"),
                   modality_of(str(config.get("model_name_or_path") or "")))


def serves(pinned: list[str] | tuple[str, ...]) -> list[str]:
    """The methods a preset serves: those that read every key it pins (R-METHOD-KEYS)."""
    return [name for name in method_names() if all(Shape("sft", name).reads(key) for key in pinned)]
