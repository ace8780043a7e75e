"""Peak training memory per GPU for a LoRA/QLoRA run under LlamaFactory, and the batch that fits.

All figures are GiB (2**30 bytes). The estimate is a sum of parts (T = micro_batch x cutoff_len,
the worst case: LlamaFactory pads each batch to its longest sample, at most cutoff_len):

* weights: Linear layers at the base dtype (bf16/fp16 2 B, fp32 4 B), 8-bit (LLM.int8: 1 B plus
  a 4 B scale per output row) or 4-bit NF4 (4.5 bits/param, 4.127 with double quantization:
  QLoRA paper). Embeddings, norms, the output head, MoE routers and fused expert tensors stay
  16-bit: bitsandbytes only replaces nn.Linear and skips the output head. ZeRO-3 shards
  weights across GPUs and gathers them back layer by layer (counted: 2 layers, or the output
  head, whichever is larger).
* lora / gradients / optimizer: 4 + 4 + 8 B per trainable parameter (LlamaFactory upcasts
  trainable params to fp32; AdamW keeps m and v). pure_bf16 halves each; 8-bit optimizers keep
  2 B of state. ZeRO-2 shards gradients and optimizer state, ZeRO-3 all three.
* CPU offload (DeepSpeed's ``offload_optimizer`` / ``offload_param``, ZeRO-Offload: Ren et al. 2021): the optimizer
  states, the fp32 master weights and the gradient partitions leave the GPU for CPU RAM (Adam runs on the CPU);
  with ``offload_param`` (ZeRO-3 only) the 16-bit weight partitions too, leaving the gathered working set. The CPU
  RAM of the node is ``cpu_gib``: 4 B of fp32 gradient + the optimizer's bytes per trainable parameter, + 2 B per
  weight with offload_param (below ZeRO-3, every rank's 16-bit copy of the model at load when that is larger),
  x DeepSpeed's own estimators' additional_buffer_factor 1.5 (pinned buffers): lfgen/models/zero.py.
* activations and logits: lfgen/models/activations.py (per-layer elements, eager scores, the loss
  buffers at 14 B per token x vocabulary with a 16-bit head and 16 B with an fp32 one, Liger's chunks,
  and a peak of checkpoints + max(loss, recomputed layer): the two do not coincide).
* overhead: the CUDA context (cuda_context_gib, 0.5 GiB unless the GPU's own is known; fitcheck-llm
  measured 0.14 GiB on a T4) + what the caching allocator reserves beyond allocated
  (FRAGMENTATION x the loss buffers + FRAGMENTATION_SCORES x one layer's eager scores, both fitted on
  the fit rows of benchmarks/memory_reference.yaml only; with ``variable_lengths``, real data padded
  per batch, one more set of loss buffers: VARIABLE_LENGTH_FRAGMENTATION) + for quantized models one dequantized
  16-bit copy of the largest Linear. NCCL and DeepSpeed buckets are not modelled; DeepSpeed's optimizer step
  (its fp32 gradient partition, lfgen/models/zero.py) counts where it exceeds the activations. The total is the
  process's peak as nvidia-smi shows it, which is what decides an OOM.

Not modelled: fragmentation beyond the constant, autocast weight copies (<= 2 B per trainable
param), torch.compile, packing, use_unsloth. ``benchmarks/memory_reference.py`` publishes the error
per split against measurements and fitcheck-llm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lfgen.errors import InputError, validation_problems
from lfgen.models.activations import activation_peak
from lfgen.models.catalog import ModelSpec, load_model
from lfgen.models.modules import inventory
from lfgen.models.zero import cpu_bytes, offloads, step_bytes
from lfgen.models.trainable import count_trainable

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuBLAS/cuDNN workspaces outside the allocator (default; per GPU when known)
# What the caching allocator reserves beyond what is allocated, as shares of the short-lived buffers that
# fragment it: the loss buffers and one layer's eager attention scores. Fitted on the reference set's fit rows
# only (benchmarks/memory_reference.py --fit); fitcheck-llm's T4 rows show reserved - allocated of 0.1-0.6 GiB
# with SDPA and up to 2.4 GiB with eager attention at 4K tokens.
FRAGMENTATION = 0.15
FRAGMENTATION_SCORES = 1.9
# Batches of varying length (real data, padded per batch) ratchet the caching allocator: the freed loss buffers
# of the longest batch so far stay cached as blocks too small for a longer one, which allocates its own. At the
# peak the pool holds about one more set of the largest transient buffers than fixed-shape runs (the fit rows,
# random tokens of one length) show. First principles, not fitted: the fit rows have no varying lengths.
# PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True lets the allocator grow one segment instead. It counts in the
# peak (what nvidia-smi shows) but not in what must fit: before an out-of-memory the allocator frees its cache
# and retries, so these blocks never make a run fail (MemoryEstimate.needed).
VARIABLE_LENGTH_FRAGMENTATION = 1.0
CUDA_OVERHEAD_GIB = CUDA_CONTEXT_GIB  # the old name, for callers
NF4_BITS = 4.5  # 4-bit codes + one fp32 absmax per 64-block
NF4_DOUBLE_QUANT_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # absmax quantized to 8 bits per 256 blocks
NO_OFFLOAD = {"offload_optimizer": "none", "offload_param": "none"}
BREAKDOWN_KEYS = ("weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead", "total")


class MemorySettings(BaseModel):
    """The training settings the estimate depends on; names follow LlamaFactory's keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    micro_batch: int = Field(default=1, ge=1)  # per_device_train_batch_size
    cutoff_len: int = Field(default=2048, ge=1)
    lora_rank: int = Field(default=8, ge=1)
    lora_target: str | list[str] = "all"
    additional_target: str | list[str] | None = None
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    use_dora: bool = False
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    # The dtype the frozen weights load in: LlamaFactory 0.9.5 loads the checkpoint's own (model/loader.py:155,
    # torch_dtype "auto"), whatever bf16/fp16 say (R-HW-FP16-AMP). None: the compute dtype's width.
    weights_dtype: Literal["bf16", "fp16", "fp32"] | None = None
    quantization_bit: Literal[4, 8] | None = None
    double_quantization: bool = True
    gradient_checkpointing: bool = True  # LlamaFactory: on unless disable_gradient_checkpointing
    pure_bf16: bool = False
    optim: str = "adamw_torch"
    zero_stage: Literal[0, 1, 2, 3] = 0
    # DeepSpeed's zero_optimization.offload_optimizer / offload_param device (ZeRO-Offload, ZeRO-Infinity): "cpu"
    # moves the optimizer states, fp32 master weights and gradient partitions (offload_param: the weights, ZeRO-3
    # only) to CPU RAM; "nvme" to a disk. Offload without a stage that supports it is ignored, as DeepSpeed does.
    offload_optimizer: Literal["none", "cpu", "nvme"] = "none"
    offload_param: Literal["none", "cpu", "nvme"] = "none"
    num_gpus: int = Field(default=1, ge=1)
    flash_attn: Literal["auto", "sdpa", "fa2", "fa3", "disabled"] = "auto"
    enable_liger_kernel: bool = False
    # Any finetuning type (lfgen.models.trainable); full and freeze keep every trainable weight in fp32.
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = "lora"
    freeze_trainable_layers: int = 2
    freeze_trainable_modules: str | list[str] = "all"
    freeze_extra_modules: str | list[str] | None = None
    use_llama_pro: bool = False
    oft_rank: int = Field(default=0, ge=0)
    oft_block_size: int = Field(default=32, ge=0)
    deepspeed: bool = False  # a DeepSpeed engine: 16-bit weights and grads, fp32 master copy in the optimizer
    # PEFT's prepare_model_for_kbit_training (plain HF/PEFT QLoRA scripts; LlamaFactory does not call it): every
    # weight bitsandbytes left unquantized (embeddings, head, norms) is upcast to fp32, so the residual stream is fp32.
    kbit_fp32_upcast: bool = False
    cuda_context_gib: float = Field(default=CUDA_CONTEXT_GIB, ge=0.0)  # the process memory outside the allocator
    # Batches vary in length (real data, unpacked): the allocator keeps the longest batch's freed buffers.
    variable_lengths: bool = False
    # The run's shape (R-STAGE-MEM; lfgen/builder/shapes.py): the sequences each micro-batch row holds (2: a preference
    # pair), the reference model (an adapter switched off, or a frozen copy of the weights), the sequences one no-grad
    # reference forward holds, and the loss over the vocabulary (activations.py).
    sequences: int = Field(default=1, ge=1)
    reference: Literal["none", "adapter", "copy"] = "none"
    reference_sequences: int = Field(default=0, ge=0)
    loss: Literal["causal", "logps", "value"] = "causal"
    # A vision-language model (lfgen/models/vision.py): LlamaFactory's freeze keys, and the images of the peak
    # sequence at image_max_pixels: vision-tower patches and their tokens (already inside cutoff_len).
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    freeze_language_model: bool = False
    image_patches: int = Field(default=0, ge=0)
    image_tokens: int = Field(default=0, ge=0)


def settings_from(**values: Any) -> MemorySettings:
    """Validate settings; a bad value becomes one InputError line per field."""
    try:
        return MemorySettings(**values)
    except ValidationError as exc:
        raise InputError("; ".join(validation_problems(exc))) from None


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory per GPU in GiB, by part, with the assumptions that matter."""

    model: str
    settings: MemorySettings
    breakdown: dict[str, float]
    trainable_params: int
    notes: tuple[str, ...]
    fragmentation_gib: float = 0.0  # reserved beyond allocated (in overhead): what torch's allocated peak leaves out
    # Of that, the cached blocks the caching allocator frees and retries with before it raises an out-of-memory
    # (the varying-length ratchet): nvidia-smi shows them on a GPU with room, they never cause an OOM.
    releasable_gib: float = 0.0
    cpu_gib: float = 0.0  # CPU RAM of the node the offloaded states need (all its GPUs together; 0 without offload)
    measure: str = ("the process's peak as nvidia-smi shows it (allocator pool + CUDA context), "
                    "which is what decides an out-of-memory")

    @property
    def total(self) -> float:
        return self.breakdown["total"]

    @property
    def needed(self) -> float:
        """What must fit on the GPU: the peak less the cache the allocator releases before failing."""
        return self.total - self.releasable_gib


def _optimizer_bytes(optim: str, pure_bf16: bool) -> float:
    name = optim.lower()
    if "8bit" in name:
        return 2.0
    if name.startswith(("adamw", "adam", "paged_adamw", "lion")):
        states = 1 if "lion" in name else 2  # Lion keeps one momentum, Adam two
        return states * (2.0 if pure_bf16 else 4.0)
    if name in ("sgd", "adafactor"):
        return 0.0  # HF SGD has no momentum by default; Adafactor's factored state is tiny for LoRA
    raise InputError(f"optim: '{optim}' has no memory rule in lfgen; use adamw_torch, adamw_torch_fused, "
                     "adamw_8bit, paged_adamw_8bit, paged_adamw_32bit, lion_32bit, sgd or adafactor")


def _weights(spec: ModelSpec, s: MemorySettings, notes: list[str]) -> tuple[float, int]:
    """Bytes of the base weights on one GPU, and the largest quantized Linear (elements)."""
    inv = inventory(spec)
    dense_bytes = 4 if (s.weights_dtype or s.compute_dtype) == "fp32" and s.quantization_bit is None else 2
    if s.quantization_bit is not None and s.kbit_fp32_upcast:
        dense_bytes = 4  # prepare_model_for_kbit_training upcasts what bitsandbytes left unquantized
    total, largest = 0.0, 0
    for g in inv.groups:
        is_head = g.kind == "linear" and spec.vocab_size in (g.in_features, g.out_features)
        if g.kind != "linear" or is_head or s.quantization_bit is None:
            total += g.count * g.params_each * dense_bytes
            continue
        weight = g.in_features * g.out_features
        bias = g.params_each - weight
        largest = max(largest, weight)
        if s.quantization_bit == 8:
            per = weight * 1 + g.out_features * 4  # int8 codes + fp32 row scale
        else:
            per = weight * (NF4_DOUBLE_QUANT_BITS if s.double_quantization else NF4_BITS) / 8
        total += g.count * (per + bias * 2)
    total -= inv.tied_params * dense_bytes
    if s.quantization_bit and any(g.kind == "experts" for g in inv.groups):
        notes.append("bitsandbytes quantizes nn.Linear only: the fused MoE expert tensors stay 16-bit")
    if s.zero_stage == 3:
        layer = sum(g.count * g.params_each for g in inv.groups if ".layers." in g.path) / spec.num_hidden_layers
        head = spec.vocab_size * spec.hidden_size
        # partition (in CPU RAM with offload_param) + gathered working set
        total = (0.0 if offloads(s)[1] else total / s.num_gpus) + max(2 * layer, head) * 2
    return total, largest


def estimate_memory(model: ModelSpec | str, settings: MemorySettings | None = None, **values: Any) -> MemoryEstimate:
    """Peak training memory per GPU (GiB) as a breakdown; keyword values override *settings*."""
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    if spec.model_type == "clip":
        raise InputError(f"--model {spec.name}: memory estimates cover causal language models "
                         "(what LlamaFactory trains); CLIP is supported for module names and counts only")
    base = settings.model_dump() if settings else {}
    s = settings_from(**{**base, **values})
    lora = count_trainable(spec, **s.model_dump())
    notes = list(lora.notes)
    weights, largest = _weights(spec, s, notes)
    vision_activations = 0.0
    if spec.composite:
        from lfgen.models import vision

        tower_weights, tower_largest = vision.weight_bytes(spec, s, NF4_DOUBLE_QUANT_BITS if s.double_quantization
                                                           else NF4_BITS)
        trainable_towers = vision.trained(spec, s)
        if s.zero_stage == 3:
            tower_weights = 0.0 if offloads(s)[1] else tower_weights / s.num_gpus
        weights, largest = weights + tower_weights, max(largest, tower_largest)
        vision_activations = vision.activation_bytes(spec, s, trainable_towers)
        notes += vision.notes(spec, s, trainable_towers)
    # A preference pair is two sequences in one forward: the activations hold micro-batch x sequences rows.
    rows = s.model_copy(update={"micro_batch": s.micro_batch * s.sequences}) if s.sequences > 1 else s
    activations, logits, loss, scores = activation_peak(spec, rows, lora)
    reference = _weights(spec, s, [])[0] if s.reference == "copy" else 0.0  # full/freeze DPO, KTO: a frozen copy
    ratchet = (VARIABLE_LENGTH_FRAGMENTATION if s.variable_lengths else 0.0) * loss
    transient = FRAGMENTATION * loss + ratchet + FRAGMENTATION_SCORES * scores
    trainable = lora.trainable
    half = 2.0 if s.pure_bf16 else 4.0
    shard_state = s.num_gpus if s.zero_stage >= 1 else 1
    shard_grads = s.num_gpus if s.zero_stage >= 2 else 1
    shard_params = s.num_gpus if s.zero_stage == 3 else 1
    weight_bytes, grad_bytes, state_bytes = half, half, _optimizer_bytes(s.optim, s.pure_bf16)
    off_optimizer, off_params = offloads(s)
    on_gpu = 0.0 if off_params else 1.0  # the trainable weights' partitions live in CPU RAM with offload_param
    if s.finetuning_type in ("full", "freeze"):
        if s.deepspeed:  # DeepSpeed trains 16-bit weights and keeps the fp32 master copy with the optimizer
            weight_bytes, grad_bytes, state_bytes = 2.0, 2.0, state_bytes + (0.0 if s.pure_bf16 else 4.0)
        # The trainable weights are the model's own: take them out of the 16-bit base and count them here.
        dense = 4 if (s.weights_dtype or s.compute_dtype) == "fp32" else 2
        weights -= on_gpu * trainable * dense / shard_params
    parts = {
        "weights": weights + reference + (on_gpu * trainable * weight_bytes / shard_params
                                          if s.finetuning_type in ("full", "freeze") else 0.0),
        "lora": 0.0 if s.finetuning_type in ("full", "freeze") else on_gpu * trainable * half / shard_params,
        # ZeRO-Offload: the gradient partitions go to CPU RAM as they are reduced, Adam and its states live there
        "gradients": 0.0 if off_optimizer else trainable * grad_bytes / shard_grads,
        "optimizer": 0.0 if off_optimizer else trainable * state_bytes / shard_state,
        "activations": activations + vision_activations,
        "logits": logits,
        "overhead": s.cuda_context_gib * GIB + transient + largest * 2,
    }
    step = step_bytes(s, trainable, off_optimizer, spec.vocab_size * spec.hidden_size)
    parts["optimizer"] += max(0.0, step - parts["activations"] - logits)
    breakdown = {key: value / GIB for key, value in parts.items()}
    breakdown["total"] = sum(breakdown.values())
    if s.flash_attn == "disabled":
        notes.append("flash_attn: disabled (eager attention) keeps heads x s^2 scores per layer")
    if spec.multimodal and not spec.composite:
        notes.append("weights cover the text model; the checkpoint's frozen vision tower adds its own "
                     "weights on top (Gemma 3 4B-27B: a ~0.4B-param SigLIP encoder, ~0.8 GiB in bf16)")
    if s.compute_dtype == "fp16":
        notes.append("fp16 LoRA training can overflow to NaN; prefer bf16 where the GPU has it")
    notes += _shape_notes(s, reference / GIB)
    # every weight at the size it loads in: what offload_param moves, and what each rank loads before ZeRO-2 shards
    whole = _weights(spec, s.model_copy(update={"zero_stage": 0}), [])[0] if off_params or off_optimizer else 0.0
    cpu = cpu_bytes(s, trainable, state_bytes, whole, notes) / GIB
    return MemoryEstimate(spec.name, s, breakdown, trainable, tuple(notes), transient / GIB, ratchet / GIB, cpu)


def _shape_notes(s: MemorySettings, reference_gib: float) -> list[str]:
    """What the run's shape adds (R-STAGE-MEM), in words."""
    notes = []
    if s.sequences > 1:
        notes.append(f"each micro-batch row is a pair (chosen + rejected): activations and logits of "
                     f"{s.micro_batch * s.sequences} sequences")
    if s.reference_sequences:
        how = ("the same model with the adapter switched off, no extra weights" if s.reference == "adapter" else
               f"a frozen copy of the weights, {reference_gib:.1f} GiB in weights")
        notes.append(f"a no-grad reference forward of {s.micro_batch * s.reference_sequences} sequence(s): {how}")
    if s.loss == "logps" and s.enable_liger_kernel:
        notes.append("the preference loss upcasts the full logits to fp32: Liger's fused loss does not apply")
    return notes


@dataclass(frozen=True)
class Option:
    """One change that would make the run fit, with its estimate."""

    description: str
    changes: dict[str, Any]
    estimate: MemoryEstimate


@dataclass(frozen=True)
class Fit:
    """The largest micro-batch that fits, and the accumulation that keeps the effective batch."""

    fits: bool
    micro_batch: int  # 0 when even 1 does not fit
    gradient_accumulation_steps: int
    effective_batch: int  # micro_batch x accumulation x num_gpus
    budget_gib: float
    estimate: MemoryEstimate  # at the chosen micro-batch (or at 1 when nothing fits)
    options: tuple[Option, ...] = ()  # only when nothing fits


def _divisors_descending(n: int) -> list[int]:
    return sorted((d for d in range(1, n + 1) if n % d == 0), reverse=True)


def _options(spec: ModelSpec, s: MemorySettings, budget: float) -> list[Option]:
    """Single changes that make micro-batch 1 fit; per kind, only the mildest one that fits; cheapest first (what the
    run learns stays the same for the first three kinds; more GPUs cost money)."""
    kinds: list[list[tuple[str, dict[str, Any]]]] = []
    if not s.gradient_checkpointing:
        kinds.append([("turn gradient checkpointing back on", {"gradient_checkpointing": True})])
    if not s.enable_liger_kernel:
        kinds.append([("enable_liger_kernel: true (no full-vocab logits)", {"enable_liger_kernel": True})])
    if s.num_gpus > 1 and s.zero_stage < 3:
        # R-METHOD-ZERO, R-MULTI-DS: on the GPUs given first, before anything the run learns differently: shard the
        # optimizer (ZeRO-2, full and freeze only: an adapter's states are tiny), then the weights too (ZeRO-3)
        stages = (2, 3) if s.finetuning_type in ("full", "freeze") else (3,)
        kinds.append([(f"DeepSpeed ZeRO-{z} on the {s.num_gpus} GPUs", {"zero_stage": z})
                      for z in stages if z > s.zero_stage])
    if s.quantization_bit != 4 and s.finetuning_type in ("lora", "oft"):  # LlamaFactory quantizes adapters only
        kinds.append([("4-bit quantization (QLoRA: quantization_bit 4)", {"quantization_bit": 4})])
    # never at or below one sample's image tokens: a cut image span crashes LlamaFactory (R-VLM-TOKENS)
    cutoffs = [s.cutoff_len // 2**i for i in range(1, 8) if s.cutoff_len // 2**i >= max(128, s.image_tokens + 1)]
    kinds.append([(f"cutoff_len {c}", {"cutoff_len": c}) for c in cutoffs])  # longest first
    # more GPUs: ZeRO-3 without CPU offload (what more GPUs buy: the speed offload gives up)
    kinds.append([(f"{n} GPUs with DeepSpeed ZeRO-3", {"num_gpus": n, "zero_stage": 3, **NO_OFFLOAD})
                  for n in (2, 4, 8, 16) if n > s.num_gpus])  # fewest first
    found: list[Option] = []
    for kind in kinds:
        for description, changes in kind:
            estimate = estimate_memory(spec, s, **{**changes, "micro_batch": 1})
            if estimate.needed <= budget:
                found.append(Option(description, changes, estimate))
                break
    return found


def fit_micro_batch(
    model: ModelSpec | str,
    gpu_mem_gib: float,
    settings: MemorySettings | None = None,
    *,
    effective_batch: int = 32,
    headroom: float | None = None,
    **values: Any,
) -> Fit:
    """Largest micro-batch within ``gpu_mem_gib x (1 - headroom)`` keeping *effective_batch*
    (*headroom*: R-HW-HEADROOM's, unless given).

    When even micro-batch 1 does not fit, ``options`` lists single changes that would.
    """
    if headroom is None:
        from lfgen.catalogs.rules import headroom as registry_headroom

        headroom = registry_headroom()
    if gpu_mem_gib <= 0:
        raise InputError(f"gpu_mem_gib: must be > 0 (got {gpu_mem_gib})")
    if not 0 <= headroom < 1:
        raise InputError(f"headroom: must be in [0, 1) (got {headroom})")
    if effective_batch < 1:
        raise InputError(f"effective_batch: must be >= 1 (got {effective_batch})")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    s = settings_from(**{**(settings.model_dump() if settings else {}), **values})
    budget = gpu_mem_gib * (1 - headroom)
    per_gpu = max(1, math.ceil(effective_batch / s.num_gpus))
    for micro in _divisors_descending(per_gpu):
        estimate = estimate_memory(spec, s, micro_batch=micro)
        if estimate.needed <= budget:
            accumulation = per_gpu // micro
            return Fit(True, micro, accumulation, micro * accumulation * s.num_gpus, budget, estimate)
    estimate = estimate_memory(spec, s, micro_batch=1)
    return Fit(False, 0, 0, 0, budget, estimate, tuple(_options(spec, s, budget)))
