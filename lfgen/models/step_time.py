"""The seconds of one micro-step and of one optimizer step, from the model's real matrices and the GPU's peaks.

Split from time.py (which counts the steps and sums the run). Every matrix multiply of the model is timed
by a roofline: ``max(FLOPs / (peak x u), bytes / (bandwidth x BANDWIDTH_EFFICIENCY))``, per Linear group of
the module inventory (``lfgen.models.modules``), so small hidden sizes and short batches come out memory-
bound, as they are. The passes per micro-step:

* forward: every Linear and the head, ``2 x tokens x in x out`` FLOPs each;
* recompute (gradient checkpointing, LlamaFactory's default): the decoder layers' forward again (not the head),
  only for layers with trainable weights (LlamaFactory checkpoints no frozen layer: freeze tuning's lower layers
  run once);
* backward: the input gradient of every Linear down to the lowest trained layer (a frozen base still passes
  it to the adapters below), plus the weight gradient of trained weights: about 4N for LoRA/QLoRA with
  their recompute 6N, 6N full (8N with recompute);
* adapters: LoRA's two thin GEMMs per adapted module and pass, OFT's rotation of the module's input
  (``in x block`` per token), DoRA's column norm (a weight-sized read per pass);
* attention: ``4 x batch x s^2 x q_dim`` per layer forward, half of it for causal flash/SDPA kernels, whose
  backward recomputes the scores (2.5 forwards of FLOPs, FlashAttention's own count); these fused kernels run at
  ATTENTION_SHARE of the GEMMs' rate (sm75's memory-efficient kernel: ATTENTION_SHARE_SM75, fitted), ramping
  up with the length as s / (s + 512); eager attention (``flash_attn: disabled``) is two batched GEMMs per pass
  (backward twice the forward) and moves its s^2 scores through memory (EAGER_BYTES per score and pass, fitted);
* the loss: the logits in fp32 read and written a few times (LOSS_BYTES per logit);
* element-wise work (norms, rotary, activations, residuals): bytes per token and layer, memory-bound;
  ``torch_compile`` fuses these chains (COMPILE_FUSION of the bytes and of the kernels issued);
* 4-bit weights: bitsandbytes dequantizes every quantized weight on every pass (DEQUANT_BYTES per param:
  the 4-bit codes read, a 16-bit copy written); ``kbit_fp32_upcast`` (PEFT's prepare_model_for_kbit_training, not LlamaFactory) makes the
  residual stream fp32, so attention, adapters and the head run at the FP32 rate;
* launch overhead: KERNEL_SECONDS per kernel, ~kernels per layer and pass plus per adapted module (fitted);
  kernels run asynchronously, so a micro-step takes the longer of the GPU's work and the CPU's issuing.

An optimizer step reads and writes the trainable parameters' state once (OPTIMIZER_BYTES per parameter)
plus a fixed STEP_SECONDS (clipping, scheduler, logging; fitted). The constants live in
``presets/throughput.yaml`` with where each comes from.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lfgen.models.catalog import ModelSpec
from lfgen.models.modules import inventory
from lfgen.resources import load_data

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.catalogs.gpus import Peak
    from lfgen.models.params import LoraCount
    from lfgen.models.time import TimeSettings


@functools.cache
def constants() -> dict[str, Any]:
    """presets/throughput.yaml: structure (first principles), fitted constants, utilisation priors, range."""
    return load_data("throughput.yaml")


@dataclass(frozen=True)
class Device:
    """What the step time needs of a GPU: its peaks and the share of them its matrix multiplies reach."""

    peak: Peak
    utilisation: float  # of the dense 16-bit (and FP32) peak a large GEMM reaches on this architecture
    peak_arch: str = ""  # the GPU architecture: which fused attention kernel SDPA runs (FlashAttention needs sm80+)

    @property
    def flops_16(self) -> float:
        return self.peak.tflops_16 * 1e12 * self.utilisation

    @property
    def flops_32(self) -> float:
        return self.peak.tflops_32 * 1e12 * self.utilisation

    @property
    def bandwidth(self) -> float:
        return self.peak.bandwidth_gbs * 1e9 * constants()["structure"]["bandwidth_efficiency"]


@dataclass(frozen=True)
class MicroStep:
    """Seconds of one micro-step by part."""

    matmul: float
    attention: float
    memory: float  # loss, element-wise, dequantization, eager scores, weight casts
    launch: float  # the CPU's time to issue the kernels

    @property
    def total(self) -> float:
        """The GPU's work or the CPU's issuing of it, whichever is longer: kernels run asynchronously, so
        the CPU only costs time when the GPU finishes each kernel faster than the next one is issued."""
        return max(self.matmul + self.attention + self.memory, self.launch)


def _gemm(device: Device, tokens: float, fan_in: int, fan_out: int, count: float, fp32: bool) -> float:
    """Roofline seconds of `count` GEMMs of tokens x fan_in @ fan_in x fan_out."""
    element = 4 if fp32 else 2
    flops = 2.0 * tokens * fan_in * fan_out
    moved = element * (tokens * fan_in + fan_in * fan_out + tokens * fan_out)
    return count * max(flops / (device.flops_32 if fp32 else device.flops_16), moved / device.bandwidth)


def _layer_share(spec: ModelSpec, s: TimeSettings) -> float:
    """The share of the decoder layers a backward pass goes through (freeze: from the lowest trained layer up)."""
    if s.finetuning_type != "freeze" or s.use_llama_pro:
        return 1.0
    from lfgen.models.trainable import trainable_layer_ids

    ids = trainable_layer_ids(spec.num_hidden_layers, s.freeze_trainable_layers, s.use_llama_pro)
    return (spec.num_hidden_layers - min(ids)) / spec.num_hidden_layers if ids else 0.0


def micro_step(spec: ModelSpec, device: Device, s: TimeSettings, lora: LoraCount, sequences: float,
               padded_len: float, reference_forward: bool = False, backward: bool = True) -> MicroStep:
    """Seconds of one micro-step of *sequences* sequences padded to *padded_len* tokens."""
    c = constants()
    fit, structure = c["fitted"], c["structure"]
    tokens = sequences * padded_len
    fp32_all = s.compute_dtype == "fp32"
    fp32_side = fp32_all or (s.quantization_bit is not None and s.kbit_fp32_upcast)
    gc = s.gradient_checkpointing and backward
    trains_all = s.finetuning_type == "full"
    share = _layer_share(spec, s) if backward else 0.0
    # LlamaFactory checkpoints only layers with trainable weights (get_custom_gradient_checkpointing_func): frozen
    # layers below the lowest trained one run once, without recompute or backward
    recomputed = share if gc else 0.0
    inv = inventory(spec)
    forward = recompute = back = 0.0
    quantized = 0
    for g in inv.groups:
        if g.kind not in ("linear", "experts"):
            continue
        is_head = spec.vocab_size in (g.in_features, g.out_features)
        count = g.count
        if g.kind == "experts":  # fused expert tensors: each token reaches top-k of them
            count = g.count * spec.num_experts_per_tok / max(1, spec.num_experts) * 3
        one = _gemm(device, tokens, g.in_features, g.out_features, count, fp32_all or (is_head and fp32_side))
        forward += one
        if not is_head:
            recompute += one * recomputed
            if s.quantization_bit is not None and g.kind == "linear":
                quantized += g.count * g.in_features * g.out_features
        back += one * (share if not is_head else 1.0) * (2 if trains_all else 1)
    if s.finetuning_type == "freeze" and backward:  # the trained layers' weight gradients
        back += _trained_weight_grads(device, tokens, lora, fp32_all)
    matmul = forward + (recompute + back if backward else 0.0)
    if reference_forward:
        matmul += forward
    adapters, adapter_kernels = _adapters(device, tokens, s, lora, fp32_side, backward, gc)
    matmul += adapters
    # attention: 4 b s^2 q_dim per layer forward; causal flash/SDPA kernels skip the masked half, and their backward
    # recomputes the scores (2.5 forwards of FLOPs: FlashAttention's benchmark counts); eager attention's backward is
    # two batched GEMMs per forward one. Fused kernels reach a smaller share of the peak than GEMMs, less at short
    # sequences (their tiles and the causal tail): the share ramps as s / (s + ATTENTION_HALF_LENGTH).
    eager = s.flash_attn == "disabled"
    attn_fwd = 4.0 * sequences * padded_len ** 2 * spec.q_dim * spec.num_hidden_layers
    attn_fwd *= 1.0 if eager else structure["flash_causal_share"]
    backward_attn = (2.0 if eager else structure["flash_backward_forwards"]) * share if backward else 0.0
    passes = 1 + recomputed + backward_attn + (1 if reference_forward else 0)
    # FlashAttention-2/3 kernels take only fp16/bf16 inputs: an fp32 residual stream is cast down for them; SDPA and
    # eager attention run in the dtype q, k, v arrive in (bitsandbytes returns a Linear4bit's output in its input's
    # dtype, so kbit_fp32_upcast makes them fp32)
    fp32_attention = fp32_side and s.flash_attn not in ("fa2", "fa3")
    kernel_share = fit["attention_share_sm75"] if device.peak_arch in ("Turing", "Volta") else structure["attention_share"]
    ramp = 1.0 if eager else kernel_share * padded_len / (padded_len + structure["attention_half_length"])
    attention = attn_fwd * passes / ((device.flops_32 if fp32_attention else device.flops_16) * ramp)
    memory = 0.0
    if eager:  # the s^2 scores go through memory: softmax, its copy, the backward
        scores = sequences * spec.num_attention_heads * padded_len ** 2 * spec.num_hidden_layers
        memory += scores * fit["eager_bytes_per_score"] * passes / device.bandwidth
    logits = tokens * spec.vocab_size * (0.25 if s.enable_liger_kernel else 1.0)
    memory += logits * structure["loss_bytes_per_logit"] * (1 + (1 if reference_forward else 0)) / device.bandwidth
    per_token = structure["elementwise_bytes"]["per_hidden"] * spec.hidden_size \
        + structure["elementwise_bytes"]["per_intermediate"] * (spec.intermediate_size or spec.moe_intermediate_size)
    fused = structure["compile_fusion"] if s.torch_compile else 1.0  # torch.compile fuses element-wise chains
    memory += tokens * per_token * spec.num_hidden_layers * passes * (2 if fp32_all else 1) * fused / device.bandwidth
    if quantized:
        weight_passes = 1 + (1 if gc else 0) + (1 if backward else 0) + (1 if reference_forward else 0)
        memory += quantized * structure["dequant_bytes_per_param"] * weight_passes / device.bandwidth
    if s.finetuning_type in ("full", "freeze") and not s.pure_bf16 and not fp32_all and backward:
        memory += lora.trainable * 6 * (2 if gc else 1) / device.bandwidth  # autocast casts fp32 weights per pass
    # the CPU issues forward kernels through Python; the autograd engine issues backward ones from C++
    issued = 1 + recomputed + (1 if reference_forward else 0) + structure["backward_issue_share"] * share
    kernels = (spec.num_hidden_layers * structure["kernels_per_layer_pass"] * issued + adapter_kernels) * fused
    return MicroStep(matmul, attention, memory, kernels * fit["kernel_seconds"])


def _trained_weight_grads(device: Device, tokens: float, lora: LoraCount, fp32: bool) -> float:
    """Freeze tuning's weight gradients: one GEMM-sized pass over the trained parameters (~2 x tokens x N_trained)."""
    flops = 2.0 * tokens * lora.trainable
    return flops / (device.flops_32 if fp32 else device.flops_16)


def _adapters(device: Device, tokens: float, s: TimeSettings, lora: LoraCount, fp32: bool, backward: bool,
              gc: bool) -> tuple[float, float]:
    """(seconds, kernels) of the adapter side paths: LoRA's A and B, OFT's rotation, DoRA's norm."""
    if s.finetuning_type not in ("lora", "oft"):
        return 0.0, 0.0
    passes = 1 + (1 if gc else 0) + (3 if backward else 0)  # backward: input and weight gradients of A and B
    issued = 1 + (1 if gc else 0) + (constants()["structure"]["backward_issue_share"] if backward else 0)
    seconds = kernels = 0.0
    structure = constants()["structure"]
    for a in lora.adapted:
        if s.finetuning_type == "oft":
            block = max(1, round(math.sqrt(2 * a.params / max(1, a.count * (a.in_features or 1))) + 1))
            seconds += _gemm(device, tokens, a.in_features, block, a.count, fp32) * passes
        else:
            seconds += (_gemm(device, tokens, a.in_features, lora.rank, a.count, fp32)
                        + _gemm(device, tokens, lora.rank, a.out_features, a.count, fp32)) * passes
            if s.use_dora:  # the adapted weight's column norm, recomputed on every pass
                seconds += a.count * a.in_features * a.out_features * 6 * passes / device.bandwidth
        kernels += a.count * structure["kernels_per_adapter_pass"] * issued
    return seconds, kernels


def optimizer_step(device: Device, s: TimeSettings, trainable: int) -> float:
    """Seconds of one optimizer step: the trainable state read and written once, plus the fixed part."""
    c = constants()
    table = c["structure"]["optimizer_bytes"]
    name = s.optim.lower()
    per = table["8bit"] if "8bit" in name else table["sgd"] if name in ("sgd", "adafactor") else \
        table["bf16"] if s.pure_bf16 else table["fp32"]
    return trainable * per / device.bandwidth + c["fitted"]["step_seconds"]
