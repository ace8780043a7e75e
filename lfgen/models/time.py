"""How long a LlamaFactory training run takes, before it runs: training and evaluation seconds, tokens, a range.

The run is counted as the Hugging Face Trainer runs it: optimizer steps (samples / (micro-batch x GPUs),
rounded up, / accumulation, rounded up, x epochs; or max_steps), each of ``accumulation`` micro-steps and one
optimizer step (``lfgen.models.step_time``). A micro-step holds micro-batch sequences padded to the longest
of them (a multiple of 8), or cutoff_len when packed; the lengths come from the data
(``lfgen.models.lengths``). Its seconds are the mean over the distribution of that padded length (12 equally
likely values), not the seconds of the mean length: attention grows with the square of the length and short
batches sit on the CPU's floor, so the time of the mean length is too short for spread-out data. Pairwise stages (rm, dpo, kto) hold two sequences per sample; dpo and kto add a
reference forward (the model without its adapter, or the reference copy) unless pref_loss is orpo or simpo.
Evaluation is forward-only over the held-out rows at every eval_steps (or epoch) and once at the end, plus
generation (one memory-bound decode step per new token) with predict_with_generate.

The share of the dense peak a large GEMM reaches is one figure for the full-power cards (Ampere, Ada; Hopper
derived from it) and one for the power-capped T4 (Turing), fitted on the fit rows of
benchmarks/time_reference.yaml with every source weighted equally (presets/throughput.yaml); what differs
between methods is the step's structure, not a per-method prior. Architectures without a measurement get a
wider range. Not modelled: several nodes (network), DeepSpeed/FSDP communication (ZeRO-3 gathers
weights every layer), CPU offload, MoE routing (transformers' per-expert loop is far slower than the active
FLOPs say), Unsloth, data loading and checkpoint saving; torch.compile only as fused element-wise work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lfgen.errors import InputError, validation_problems
from lfgen.models.catalog import ModelSpec, load_model
from lfgen.models.lengths import LengthModel
from lfgen.models.step_time import Device, constants, micro_step, optimizer_step

PAIRWISE = ("rm", "dpo", "kto")
NO_REFERENCE = ("orpo", "simpo")  # reference-free preference losses


class TimeSettings(BaseModel):
    """The settings the time depends on; names follow LlamaFactory's keys (see MemorySettings for the shared ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    micro_batch: int = Field(default=1, ge=1)  # per_device_train_batch_size
    gradient_accumulation: int = Field(default=1, ge=1)
    num_gpus: int = Field(default=1, ge=1)
    cutoff_len: int = Field(default=2048, ge=1)
    packing: bool = False
    group_by_length: bool = False
    stage: Literal["pt", "sft", "rm", "dpo", "kto", "ppo"] = "sft"
    pref_loss: str = "sigmoid"
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = "lora"
    lora_rank: int = Field(default=8, ge=1)
    lora_target: str | list[str] = "all"
    additional_target: str | list[str] | None = None
    use_dora: bool = False
    oft_rank: int = Field(default=0, ge=0)
    oft_block_size: int = Field(default=32, ge=0)
    freeze_trainable_layers: int = 2
    freeze_trainable_modules: str | list[str] = "all"
    freeze_extra_modules: str | list[str] | None = None
    use_llama_pro: bool = False
    quantization_bit: Literal[4, 8] | None = None
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    kbit_fp32_upcast: bool = False
    pure_bf16: bool = False
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = True
    flash_attn: Literal["auto", "sdpa", "fa2", "fa3", "disabled"] = "auto"
    enable_liger_kernel: bool = False
    torch_compile: bool = False

    @property
    def method(self) -> str:
        """The utilisation table's method: qlora for a quantized base, else the finetuning type."""
        return "qlora" if self.quantization_bit is not None else self.finetuning_type


def settings_from(**values: Any) -> TimeSettings:
    try:
        return TimeSettings(**values)
    except ValidationError as exc:
        raise InputError("; ".join(validation_problems(exc))) from None


@dataclass(frozen=True)
class Schedule:
    """What the run does: its data, epochs and evaluations (the Trainer's arithmetic is in ``optimizer_steps``)."""

    samples: int  # training rows after the validation split
    epochs: float = 3.0
    max_steps: int | None = None
    eval_samples: int = 0
    eval_steps: int | None = None  # evaluate every eval_steps optimizer steps; None: once per epoch
    eval_batch: int = 1  # per_device_eval_batch_size
    generate_tokens: int = 0  # predict_with_generate: new tokens per evaluated row


def optimizer_steps(samples: int, micro_batch: int, num_gpus: int, accumulation: int, epochs: float,
                    max_steps: int | None = None) -> tuple[int, int]:
    """(optimizer steps, steps per epoch) as the Hugging Face Trainer counts them."""
    batches = math.ceil(max(1, samples) / (micro_batch * num_gpus))
    per_epoch = max(1, math.ceil(batches / accumulation))
    if max_steps:
        return max_steps, per_epoch
    return math.ceil(epochs * per_epoch), per_epoch


@dataclass(frozen=True)
class Throughput:
    """One micro-step's shape and seconds, and the optimizer step's."""

    sequences: float  # per micro-step, pairs counted twice
    padded_len: float
    real_tokens: float  # per micro-step
    micro_step_s: float
    optimizer_step_s: float
    accumulation: int

    @property
    def tokens_per_s(self) -> float:
        """Real tokens per second per GPU, the optimizer step included."""
        return self.real_tokens * self.accumulation / (self.micro_step_s * self.accumulation + self.optimizer_step_s)


@dataclass(frozen=True)
class TimeEstimate:
    """A run's estimated seconds; ``to_json`` is explain's documented ``time`` object."""

    train_s: float
    eval_s: float
    low_s: float
    high_s: float
    tokens: int
    tokens_per_s: float
    steps: int
    evaluations: int
    throughput: Throughput
    utilisation: float
    utilisation_source: str
    notes: tuple[str, ...] = field(default=())

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s

    def to_json(self) -> dict[str, Any]:
        return {"train_s": round(self.train_s, 1), "eval_s": round(self.eval_s, 1), "low_s": round(self.low_s, 1),
                "high_s": round(self.high_s, 1), "tokens": self.tokens, "tokens_per_s": round(self.tokens_per_s, 1)}

    def basis(self) -> dict[str, Any]:
        """How the figure was reached (explain's ``time_basis``)."""
        t = self.throughput
        return {"optimizer_steps": self.steps, "evaluations": self.evaluations,
                "micro_step_s": round(t.micro_step_s, 4), "optimizer_step_s": round(t.optimizer_step_s, 4),
                "padded_len": round(t.padded_len, 1), "utilisation": self.utilisation,
                "utilisation_source": self.utilisation_source, "notes": list(self.notes)}


def utilisation(arch: str, method: str = "") -> tuple[float, str, bool]:
    """(share of the dense peak the GEMMs reach, where it comes from, measured) for a GPU architecture.

    One share per architecture, whatever the method: what differs between LoRA, QLoRA, OFT and full fine-tuning
    (FLOPs per token, adapters, dequantization, optimizer traffic, kernels issued) is in the step's structure.
    *method* is kept for callers; it no longer selects a cell."""
    table = constants()["utilisation"]
    if arch in table and table[arch].get("measured"):
        return table[arch]["share"], table[arch]["source"], True
    row = table.get(arch) or table[table["fallback"].get(arch, "Ampere")]
    return row["share"], f"{row['source']} (no measurement for {arch}: derived)", False


def throughput(model: ModelSpec | str, gpu: Any, settings: TimeSettings, lengths: LengthModel | None = None) -> Throughput:
    """Real tokens per second per GPU of a training micro-step shape (the benchmark's unit)."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    return _throughput(spec, _device(gpu, settings), settings, lengths)


def _device(gpu: Any, s: TimeSettings) -> Device:
    if gpu is None or getattr(gpu, "peak", None) is None:
        raise InputError("--gpu: the time estimate needs a GPU of the catalog (its peak TFLOPS and bandwidth); "
                         "pass --gpu NAME")
    share, _, _ = utilisation(gpu.arch, s.method)
    return Device(gpu.peak, share, gpu.arch)


def _shape(s: TimeSettings, lengths: LengthModel | None, batch: int) -> tuple[float, float, float]:
    """(sequences, padded length, real tokens) of one micro-step of *batch* samples."""
    per_sample = 2 if s.stage in PAIRWISE else 1
    packed = s.packing or lengths is None
    if packed:
        return batch * per_sample, s.cutoff_len, batch * per_sample * s.cutoff_len
    real = lengths.mean(s.cutoff_len)
    if s.group_by_length:
        padded = real
    else:
        padded = lengths.batch_max(batch * per_sample, s.cutoff_len)
    padded = min(s.cutoff_len, 8 * math.ceil(padded / 8))  # LlamaFactory pads to a multiple of 8
    return batch * per_sample, padded, batch * per_sample * real


LENGTH_POINTS = 12  # equally likely padded lengths a micro-step's mean time is taken over


def _padded_lengths(s: TimeSettings, lengths: LengthModel | None, batch: int) -> list[float]:
    """Equally likely padded lengths of a micro-step (one value when every batch has the same shape)."""
    per_sample = 2 if s.stage in PAIRWISE else 1
    if s.packing or lengths is None:
        return [float(s.cutoff_len)]
    found = lengths.batch_max_quantiles(1 if s.group_by_length else batch * per_sample, s.cutoff_len, LENGTH_POINTS)
    return [min(s.cutoff_len, 8 * math.ceil(x / 8)) for x in found]


def _mean_step(spec: ModelSpec, device: Device, s: TimeSettings, lora: Any, sequences: float,
               lengths: list[float], **kwargs: Any) -> float:
    """Mean seconds of a micro-step over its padded lengths: the step time is not linear in the length."""
    return sum(micro_step(spec, device, s, lora, sequences, x, **kwargs).total for x in lengths) / len(lengths)


def _throughput(spec: ModelSpec, device: Device, s: TimeSettings, lengths: LengthModel | None) -> Throughput:
    from lfgen.models.trainable import count_trainable

    lora = count_trainable(spec, **s.model_dump())
    sequences, padded, real = _shape(s, lengths, s.micro_batch)
    reference = s.stage in ("dpo", "kto") and s.pref_loss not in NO_REFERENCE
    seconds = _mean_step(spec, device, s, lora, sequences, _padded_lengths(s, lengths, s.micro_batch),
                         reference_forward=reference)
    return Throughput(sequences, padded, real, seconds, optimizer_step(device, s, lora.trainable),
                      s.gradient_accumulation)


def estimate_time(model: ModelSpec | str, gpu: Any, settings: TimeSettings, schedule: Schedule,
                  lengths: LengthModel | None = None) -> TimeEstimate:
    """Training and evaluation seconds of a whole run on *gpu* (a ``lfgen.catalogs.gpus.Gpu`` with its peak)."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    s = settings
    if s.stage == "ppo":
        raise InputError("stage: ppo generates with the policy and trains a value head; lfgen does not estimate its time")
    device = _device(gpu, s)
    share, source, measured = utilisation(gpu.arch, s.method)
    shape = _throughput(spec, device, s, lengths)
    kept = lengths.kept_share(s.cutoff_len) if lengths is not None and not s.packing else 1.0
    samples = max(1, round(schedule.samples * kept))
    if s.packing and lengths is not None:  # packed: sequences of cutoff_len hold the real tokens
        samples = max(1, math.ceil(samples * lengths.mean(s.cutoff_len) / s.cutoff_len))
    steps, _ = optimizer_steps(samples, s.micro_batch, s.num_gpus, s.gradient_accumulation, schedule.epochs,
                               schedule.max_steps)
    train_s = steps * (s.gradient_accumulation * shape.micro_step_s + shape.optimizer_step_s)
    seen = min(samples * schedule.epochs if not schedule.max_steps else math.inf,
               steps * s.gradient_accumulation * s.micro_batch * s.num_gpus)
    tokens = round(seen * shape.real_tokens / s.micro_batch)
    eval_s, evaluations = _evaluation(spec, device, s, schedule, lengths, steps)
    notes = list(_notes(spec, s, lengths))
    spread = constants()["range"]
    low, high = spread["low"], spread["high"]
    if not measured:
        low, high = low / spread["derived_widen"], high * spread["derived_widen"]
    total = train_s + eval_s
    return TimeEstimate(train_s, eval_s, total * low, total * high, tokens, tokens / train_s if train_s else 0.0,
                        steps, evaluations, shape, share, source, tuple(notes))


def _evaluation(spec: ModelSpec, device: Device, s: TimeSettings, schedule: Schedule,
                lengths: LengthModel | None, steps: int) -> tuple[float, int]:
    """Seconds of every evaluation of the run, and how many there are."""
    if schedule.eval_samples <= 0:
        return 0.0, 0
    _, per_epoch = optimizer_steps(schedule.samples, s.micro_batch, s.num_gpus, s.gradient_accumulation,
                                   schedule.epochs)
    every = schedule.eval_steps or per_epoch
    evaluations = steps // every + (0 if steps % every == 0 else 1)  # and the Trainer's final evaluate
    from lfgen.models.trainable import count_trainable

    lora = count_trainable(spec, **s.model_dump())
    flat = s.model_copy(update={"group_by_length": False})  # evaluation reads the rows in order
    sequences, _, _ = _shape(flat, lengths, schedule.eval_batch)
    batches = math.ceil(schedule.eval_samples / (schedule.eval_batch * s.num_gpus))
    forward = _mean_step(spec, device, s, lora, sequences, _padded_lengths(flat, lengths, schedule.eval_batch),
                         backward=False)
    generate = 0.0
    if schedule.generate_tokens:  # one decode step per new token: the weights read once per step
        from lfgen.models.modules import inventory

        weights = inventory(spec).total_params * (0.55 if s.quantization_bit == 4 else 2)
        decode = weights / device.bandwidth + spec.num_hidden_layers * constants()["structure"][
            "kernels_per_layer_pass"] * constants()["fitted"]["kernel_seconds"]
        generate = schedule.generate_tokens * decode
    return evaluations * batches * (forward + generate), evaluations


def _notes(spec: ModelSpec, s: TimeSettings, lengths: LengthModel | None) -> list[str]:
    notes = []
    if lengths is None and not s.packing:
        notes.append(f"sample lengths unknown: every sample counted at cutoff_len {s.cutoff_len} (an upper bound); "
                     "--dataset-dir lets lfgen measure them")
    if s.num_gpus > 1:
        notes.append(f"{s.num_gpus} GPUs counted as perfect data parallelism: communication (DDP all-reduce, "
                     "DeepSpeed/FSDP gathers) and several nodes' networks are not modelled")
    if spec.is_moe:
        notes.append("MoE: the active experts' FLOPs are counted; transformers' per-expert loop is often several "
                     "times slower (LlamaFactory #8038)")
    if s.stage in ("dpo", "kto") and s.pref_loss not in NO_REFERENCE:
        notes.append(f"{s.stage}: chosen and rejected sequences plus a reference forward per pair")
    return notes
