"""The speed keys of a GPU (or CPU) run: the attention kernel (R-HW-FA, R-HW-ATTN), Liger's kernels and gradient
checkpointing (R-HW-THROUGHPUT), each written only where it helps, is installed, and changes nothing the run learns
(or says what it changes); packing is advised, not written.

Availability is this Python's (lfgen.catalogs.machine.installed): lfgen runs LlamaFactory from the environment it is
installed in, so a package missing here is missing from the run.
"""

from __future__ import annotations

from typing import Any

from lfgen.builder.context import Context
from lfgen.catalogs import machine, rules
from lfgen.catalogs.gpus import Gpu


def _model_type(ctx: Context) -> str | None:
    spec = ctx.model_spec
    return spec.model_type if spec is not None else None


def attention(ctx: Context, gpu: Gpu | None, asked: str | None) -> None:
    """flash_attn: fa2 on a GPU that runs it with flash-attn installed; else PyTorch's sdpa, or eager attention for the
    models LlamaFactory will not run under sdpa (Gemma 2's soft-capping: model/model_utils/attention.py)."""
    spec = rules.rule("R-HW-ATTN")
    model_type = _model_type(ctx)
    eager = model_type in spec.table("eager_without_fa2")
    where = gpu.name if gpu is not None else "a CPU run"
    if gpu is not None and gpu.fa2 is None:
        ctx.warn("R-HW-FA", f"{gpu.name}: FlashAttention-2 support unknown with --gpu-mem; keeping "
                            f"flash_attn {ctx.get('flash_attn')} (pass --gpu NAME to check)")
        return
    if gpu is not None and gpu.fa2 and machine.installed("flash_attn"):
        ctx.choose("flash_attn", "fa2", "R-HW-FA", f"{gpu.name} ({gpu.arch}) supports FlashAttention-2 and flash-attn "
                                                   "is installed", asked=asked)
        return
    why = (f"{gpu.name} ({gpu.arch}) has no FlashAttention-2" if gpu is not None and not gpu.fa2 else
           "no GPU: FlashAttention-2 needs one" if gpu is None else
           f"flash-attn is not installed here (LlamaFactory would warn and fall back; pip install flash-attn for fa2 "
           f"on {gpu.name})")
    if eager:
        ctx.choose("flash_attn", "disabled", "R-HW-ATTN",
                   f"{why}; {model_type} needs FlashAttention-2 for its soft-capped attention, and without it "
                   "LlamaFactory runs eager attention (flash_attn disabled), as written here: the estimate counts its "
                   "heads x s^2 scores per layer", asked=asked)
        if gpu is not None and gpu.fa2:
            ctx.warn("R-HW-ATTN", f"{model_type} on {where} without flash-attn: eager attention keeps heads x s^2 "
                                  "scores per layer; pip install flash-attn and write flash_attn: fa2 to drop them")
        return
    ctx.choose("flash_attn", "sdpa", "R-HW-ATTN" if gpu is None or gpu.fa2 else "R-HW-FA",
               f"{why}; PyTorch's fused sdpa attention instead", asked=asked)


def liger(ctx: Context) -> None:
    """enable_liger_kernel where LlamaFactory applies Liger's fused loss (SFT and pre-training of a supported model) and
    liger-kernel is installed: the same loss without the full-vocabulary logits in memory, and faster kernels."""
    spec = rules.rule("R-HW-THROUGHPUT")
    model_type = _model_type(ctx)
    if ctx.shape.stage.stage not in spec.table("liger_stages") or model_type not in spec.table("liger_models"):
        return
    if not machine.installed("liger_kernel"):
        return  # the fit advice names it with its install line (sizing.flag_for)
    ctx.choose("enable_liger_kernel", True, "R-HW-THROUGHPUT",
               f"liger-kernel is installed and LlamaFactory patches {model_type}: fused RMSNorm, RoPE, SwiGLU and a "
               "chunked cross-entropy that never holds the full-vocabulary logits (the same loss, less memory)")


def checkpointing(ctx: Context, gpu: Gpu, fit: Any, images: tuple[int, int] | None = None) -> None:
    """Gradient checkpointing off when the same micro-batch still fits without it: the recompute costs about a fifth
    of the step (torchtune's ablation), and the run learns the same. *images*: the peak sample's measured vision
    load, as the fit had it (sizing.images)."""
    if "disable_gradient_checkpointing" in ctx.fixed:
        return
    from lfgen.builder.estimates import estimate

    config = {**{k: v[0] for k, v in ctx.fixed.items()}, **ctx.config,
              "per_device_train_batch_size": fit.micro_batch, "disable_gradient_checkpointing": True}
    found = estimate(str(ctx.model_name), config, gpu.name, gpu.memory_gb, ctx.options.num_gpus, ctx.headroom,
                     seq_len=ctx.seq_len, images=images)
    if not found.fits:
        return
    needed = found.fit_gib
    ctx.choose("disable_gradient_checkpointing", True, "R-HW-THROUGHPUT",
               f"micro-batch {fit.micro_batch} fits without gradient checkpointing too ({needed:.1f} GiB of "
               f"{gpu.memory_gb * (1 - ctx.headroom):.1f}): no recompute, about 20% faster (torchtune's ablation), "
               "the same updates", alternative="R-HW-GC: checkpointing on (seed 002), the memory-safe choice")


def packing_advice(ctx: Context) -> None:
    """Many short samples: neat_packing would fill each sequence, and changes the steps, so it is advice."""
    lengths, cutoff = ctx.lengths, ctx.get("cutoff_len")
    spec = rules.rule("R-HW-THROUGHPUT")
    if (lengths is None or not lengths.count or not isinstance(cutoff, int) or ctx.shape.stage_name != "sft"
            or "neat_packing" in ctx.fixed or "packing" in ctx.fixed):
        return
    per_sequence = cutoff / max(1.0, lengths.mean)
    if per_sequence < spec.table("pack_from_samples_per_sequence"):
        return
    ctx.warn("R-HW-THROUGHPUT", f"samples average {lengths.mean:g} tokens against cutoff_len {cutoff}: padded batches "
                                f"are mostly padding; --set neat_packing=true packs about {per_sequence:.0f} samples into "
                                "each sequence (no attention across them) for several times the tokens/s, but each "
                                "micro-batch then holds that many samples (with fa2, micro-batch 1), so the optimizer "
                                "steps and the effective batch change: lfgen leaves it to you")
