"""What the forward and backward pass hold per token: decoder-layer activations and the loss buffers.

Split from memory.py (which sums the parts). All counts are bytes for micro_batch x cutoff_len tokens.

* Layer elements (16-bit unless noted) one decoder layer keeps per token for backward: per norm,
  RMSNorm's fp32 copy of its input (2H; 1H with Liger or LayerNorm); q/k/v input (H); q, k, v and the
  attention output (2q + 2kv); MLP input (H); gate, up, act(gate) and their product (4I; 3I with
  Liger's fused SwiGLU; 2I for GELU MLPs); MoE layers k routed copies of (2H + 4I_moe) plus shared
  experts; LoRA r per adapted module, with lora_dropout > 0 a dropped-out input copy and mask
  (1.5 x in_features). Gradient checkpointing (LlamaFactory's default) keeps each layer's input
  (L x H) plus one recomputed layer; without it every layer is kept. Backward adds 2H + 2I of
  gradient temporaries, the final norm 2H.
* Attention: ``flash_attn: auto`` is what LlamaFactory passes on as transformers' default, SDPA, whose
  flash / memory-efficient backends never build the s x s scores, like ``fa2``/``fa3``. Only
  ``disabled`` (eager) keeps, per layer, heads x s scores per token: the fp32 softmax output and its
  16-bit copy (6 B), both measured (fitcheck-llm's T4 rows: 4.8-6.9 B per score).
* The loss (transformers 5 ForCausalLMLoss, what LlamaFactory's sft/pt stages call): the head writes
  logits in its own dtype (2 B, or 4 B when the head is fp32), ``logits.float()`` copies them to fp32,
  cross_entropy keeps its log-softmax output (4 B) and backward holds the fp32 gradient of that output
  and of its input (4 + 4 B) while the logits are alive: 14 B per token x vocabulary with a 16-bit
  head, 16 B with an fp32 head (no separate copy). With enable_liger_kernel LlamaFactory uses Liger's
  fused linear cross entropy: one chunk of next_pow2(T / ceil(V/H)) rows (16-bit logits and their
  gradient, 6 B) plus the fp32 gradient of the hidden states, never the full tensor.
* The two peaks do not coincide: the loss buffers peak at the very start of backward, when only the
  checkpointed layer inputs exist; the recomputed layer and its gradients come after cross_entropy's
  buffers are freed (the model output's logits stay alive). So the peak is
  ``kept + max(loss peak, layer + temporaries + logits)``, not their sum.
* ``kbit_fp32_upcast`` (PEFT's prepare_model_for_kbit_training): fp32 embeddings and norms make the
  residual stream fp32, so the checkpointed layer inputs are 4 B per element.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lfgen.models.catalog import ModelSpec
from lfgen.models.params import LoraCount

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.models.memory import MemorySettings

SCORE_BYTES_EAGER = 6  # fp32 softmax output + its 16-bit copy, per score kept for backward
LOSS_BYTES = 12  # fp32 log-softmax output + fp32 gradients of its output and input, per token x vocabulary


def layer_elements(spec: ModelSpec, s: MemorySettings, lora: LoraCount, sparse: bool) -> float:
    """16-bit elements one decoder layer keeps per token for backward, eager scores excluded."""
    h, q, kv = spec.hidden_size, spec.q_dim, spec.kv_dim
    layer_norm = spec.model_type == "gpt_neox"
    norm_each = h if (s.enable_liger_kernel or layer_norm) else 2 * h
    norms = (4 if spec.model_type in ("gemma2", "gemma3_text") else 2) * norm_each
    if spec.model_type in ("qwen3", "qwen3_moe", "gemma3_text"):
        norms += 2 * (q + kv)  # per-head q/k RMSNorm, fp32 copies
    attention = h + 2 * q + 2 * kv
    gated = 3 if s.enable_liger_kernel else 4
    if sparse:
        k, moe = spec.num_experts_per_tok, spec.moe_intermediate_size
        mlp = h + k * (2 * h + gated * moe) + 4 * spec.num_experts + gated * spec.shared_expert_intermediate_size
    else:
        mlp = h + (2 if layer_norm else gated) * spec.intermediate_size
    per_layer = spec.num_hidden_layers
    adapted = sum(a.count for a in lora.adapted) / per_layer
    extra = lora.rank * adapted
    if s.finetuning_type == "oft":  # OFT rotates each adapted module's input: one more copy of it
        extra += sum(a.count * a.in_features for a in lora.adapted) / per_layer
    if s.lora_dropout > 0 and s.finetuning_type == "lora":
        extra += 1.5 * sum(a.count * a.in_features for a in lora.adapted) / per_layer
    return norms + attention + mlp + extra


def eager_scores(spec: ModelSpec, s: MemorySettings) -> float:
    """Bytes of one layer's kept attention scores under eager attention (0 for SDPA/flash)."""
    if s.flash_attn != "disabled":
        return 0.0
    return s.micro_batch * spec.num_attention_heads * s.cutoff_len ** 2 * SCORE_BYTES_EAGER


def head_bytes(s: MemorySettings) -> int:
    """Bytes per element of the head's output logits."""
    fp32 = s.compute_dtype == "fp32" or (s.quantization_bit is not None and s.kbit_fp32_upcast)
    return 4 if fp32 else 2


def loss_peak(spec: ModelSpec, s: MemorySettings) -> tuple[float, float]:
    """(bytes at the loss's peak, bytes of logits still alive afterwards)."""
    tokens = s.micro_batch * s.cutoff_len
    if s.loss == "logps":  # DPO/KTO/ORPO/SimPO: logits.to(float32) + log_softmax for backward, never fused by Liger
        return tokens * spec.vocab_size * (4 + LOSS_BYTES), tokens * spec.vocab_size * 4
    if s.loss == "value":  # a reward model: the head's logits and trl's fp32 copy, not kept for backward
        return tokens * spec.vocab_size * 6, 0.0
    if s.enable_liger_kernel:
        rows = math.ceil(tokens / math.ceil(spec.vocab_size / spec.hidden_size))
        chunk = 2 ** math.ceil(math.log2(max(1, rows)))
        return chunk * spec.vocab_size * 6 + tokens * spec.hidden_size * 4, 0.0
    kept = tokens * spec.vocab_size * head_bytes(s)
    return kept + tokens * spec.vocab_size * LOSS_BYTES, kept


def activation_peak(spec: ModelSpec, s: MemorySettings, lora: LoraCount) -> tuple[float, float, float, float]:
    """(activations, what the loss adds on top at the peak, the loss buffers, one layer's eager scores), bytes."""
    tokens = s.micro_batch * s.cutoff_len
    element = 4 if s.compute_dtype == "fp32" else 2
    residual = 4 if (s.kbit_fp32_upcast and s.quantization_bit is not None) else element
    dense = layer_elements(spec, s, lora, sparse=False)
    sparse = layer_elements(spec, s, lora, sparse=True) if spec.is_moe else 0.0
    n_sparse = sum(spec.is_sparse_layer(i) for i in range(spec.num_hidden_layers))
    n_dense = spec.num_hidden_layers - n_sparse
    inner = spec.intermediate_size if n_dense else 0
    if spec.is_moe:
        inner = max(inner, spec.num_experts_per_tok * spec.moe_intermediate_size + spec.shared_expert_intermediate_size)
    temporaries = (2 * spec.hidden_size + 2 * inner + 2 * spec.hidden_size) * tokens * element
    scores = eager_scores(spec, s)
    if s.gradient_checkpointing:
        kept = spec.num_hidden_layers * spec.hidden_size * tokens * residual
        layer = max(dense if n_dense else 0, sparse) * tokens * element + scores
    else:
        kept = (n_dense * dense + n_sparse * sparse) * tokens * element + spec.num_hidden_layers * scores
        layer = 0.0
    loss, logits_alive = loss_peak(spec, s)
    after_loss = layer + temporaries + logits_alive
    activations = kept + layer + temporaries
    return activations, max(loss, after_loss, reference_peak(spec, s)) - (layer + temporaries), loss, scores


def reference_peak(spec: ModelSpec, s: MemorySettings) -> float:
    """Bytes on top of the checkpoints while the no-grad reference forward runs (DPO, KTO): the policy's fp32 logits
    and log-softmax kept for backward, plus the reference's own fp32 logits and log-softmax (R-STAGE-MEM)."""
    if not s.reference_sequences:
        return 0.0
    rows = s.micro_batch // s.sequences  # *s* counts the pair's sequences already (memory.py)
    policy = s.micro_batch * s.cutoff_len * spec.vocab_size * 8
    return policy + rows * s.reference_sequences * s.cutoff_len * spec.vocab_size * 8
