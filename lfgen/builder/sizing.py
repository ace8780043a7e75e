"""The hardware steps: precision, attention and the batch for the GPU (R-HW-*), fit-to-GPU with the
memory estimate when the model is known, and the estimate itself."""

from __future__ import annotations

import re
from typing import Any

from lfgen.builder.context import Context
from lfgen.catalogs import rules
from lfgen.catalogs.gpus import Gpu, Hardware, find_gpu, gpu_with_memory
from lfgen.errors import InputError


def hardware(ctx: Context) -> None:
    opts = ctx.options
    if opts.gpu is not None and opts.gpu_mem is not None:
        raise InputError("--gpu and --gpu-mem: give one of them (the catalog knows each GPU's memory)")
    gpu: Gpu | None = find_gpu(opts.gpu) if opts.gpu else gpu_with_memory(opts.gpu_mem) if opts.gpu_mem else None
    if gpu is None:
        if opts.num_gpus > 1:
            ctx.warn("R-HW-BATCH", "--num-gpus without --gpu or --gpu-mem: the batch is not sized for the GPUs")
        return
    ctx.hardware = Hardware(gpu=gpu, num_gpus=opts.num_gpus)
    asked = "--gpu" if opts.gpu else "--gpu-mem"
    _precision(ctx, gpu, asked)
    if gpu.fa2 is None:
        ctx.warn("R-HW-FA", f"{gpu.name}: FlashAttention-2 support unknown with --gpu-mem; keeping "
                            f"flash_attn {ctx.get('flash_attn')} (pass --gpu NAME to check)")
    elif gpu.fa2:
        ctx.choose("flash_attn", "fa2", "R-HW-FA", f"{gpu.name} ({gpu.arch}) supports FlashAttention-2", asked=asked)
    else:
        ctx.choose("flash_attn", "sdpa", "R-HW-FA", f"{gpu.name} ({gpu.arch}) has no FlashAttention-2; "
                                                    "PyTorch's fused sdpa attention instead", asked=asked)
    micro, accumulation, tier = rules.batch_for(gpu.memory_gb, opts.num_gpus)
    pairs = ""
    if ctx.shape.pairs:  # a pair is two sequences (R-STAGE-MEM): half the tier's rows, twice the accumulation
        micro, accumulation = max(1, micro // 2), accumulation * (micro // max(1, micro // 2))
        pairs = " pairs (the tier's sequences halved: each pair is two, R-STAGE-MEM)"
    gpus = f" x {opts.num_gpus} GPUs" if opts.num_gpus > 1 else ""
    seed_way = f"seed 002's {tier} tier: {micro} x {accumulation}{gpus}{pairs}"
    if ctx.model_spec is not None:
        from lfgen.builder.estimates import cannot_estimate

        ctx.no_estimate = cannot_estimate(_merged(ctx))
        if not ctx.no_estimate:
            _fit_to_gpu(ctx, gpu, asked, seed_way)
            return
        ctx.warn("R-HW-HEADROOM", f"no memory estimate: {ctx.no_estimate}; the batch follows {seed_way}")
    _headroom(ctx, gpu)
    effective = micro * accumulation * opts.num_gpus
    ctx.choose("per_device_train_batch_size", micro, "R-HW-BATCH",
               f"{gpu.name} ({gpu.memory_gb:g} GB) is in the {tier} tier: micro-batch {micro}{pairs}", asked=asked)
    ctx.choose("gradient_accumulation_steps", accumulation, "R-HW-BATCH",
               f"{micro} x {accumulation}{gpus} = effective batch {effective} (seed 002 keeps it at 32-64)",
               asked=asked)


def _merged(ctx: Context) -> dict[str, Any]:
    """The config so far with the keys the user or the file fixed that no rule has chosen yet."""
    return {**ctx.config, **{k: v[0] for k, v in ctx.fixed.items() if k not in ctx.config}}


def images(ctx: Context) -> tuple[int, int] | None:
    """The peak sample's vision patches and image tokens, when the data's images were measured (R-VLM-PIXELS)."""
    lengths = ctx.lengths
    return (lengths.image_patches, lengths.image_tokens) if lengths is not None and lengths.image_max_pixels else None


def _fit_to_gpu(ctx: Context, gpu: Gpu, asked: str, seed_way: str) -> None:
    """R-HW-HEADROOM with the estimator: the largest micro-batch that leaves the headroom free; a shape's own
    step-down (a vision-language run's image_max_pixels, R-VLM-PIXELS) before micro-batch 1 is given up."""
    from lfgen.builder import vlm_rules
    from lfgen.builder.estimates import fit

    headroom = ctx.headroom
    target, _ = rules.effective_batch_range()
    model = ctx.model_name

    def try_fit(changes: dict[str, Any], seq_len: int | None, found: tuple[int, int] | None):
        return fit(model, {**_merged(ctx), **changes}, gpu.name, gpu.memory_gb, ctx.options.num_gpus, headroom,
                   target, seq_len=seq_len, images=found)

    result = try_fit({}, ctx.seq_len, images(ctx))
    if not result.fits:
        result = vlm_rules.step_down(ctx, try_fit, result) or result
    ctx.fit = result
    if not result.fits:
        options = "; ".join([*(f"with {flag_for(o.changes, o.description)} it would, ~{o.estimate.needed:.1f} GiB "
                               f"({o.description})" for o in result.options),
                             *filter(None, [vlm_rules.pixel_advice(ctx, try_fit)])]) or \
            "none of lfgen's single changes would"
        ctx.warn("R-HW-HEADROOM", f"{model} does not fit on {gpu.name} ({gpu.memory_gb:g} GiB, keeping {headroom:.0%} "
                                  f"free) even at micro-batch 1 (estimate {result.estimate.needed:.1f} GiB); "
                                  f"{options}")
        micro, accumulation = 1, max(1, -(-target // ctx.options.num_gpus))
        ctx.choose("per_device_train_batch_size", micro, "R-HW-BATCH", "micro-batch 1: nothing larger can fit",
                   asked=asked, alternative=seed_way)
        ctx.choose("gradient_accumulation_steps", accumulation, "R-HW-BATCH",
                   f"1 x {accumulation} keeps the effective batch", asked=asked)
        return
    budget = gpu.memory_gb * (1 - headroom)
    unit = " (pairs: each row is chosen + rejected, R-STAGE-MEM)" if ctx.shape.pairs else ""
    ctx.choose("per_device_train_batch_size", result.micro_batch, "R-HW-HEADROOM",
               f"the largest micro-batch{unit} whose estimated peak ({result.estimate.needed:.1f} GiB for {model}) "
               f"stays under {budget:.1f} of {gpu.name}'s {gpu.memory_gb:g} GiB ({headroom:.0%} left free)", asked=asked,
               alternative=seed_way)
    gpus = f" x {ctx.options.num_gpus} GPUs" if ctx.options.num_gpus > 1 else ""
    ctx.choose("gradient_accumulation_steps", result.gradient_accumulation_steps, "R-HW-BATCH",
               f"{result.micro_batch} x {result.gradient_accumulation_steps}{gpus} = effective batch "
               f"{result.effective_batch} (seed 002 keeps it at 32-64)", asked=asked)


# A fit option's change -> the flag that asks for it (the advice is a command line the user can pass back).
_FLAGS = {
    "quantization_bit": lambda v: f"--quant {v}",
    "cutoff_len": lambda v: f"--cutoff-len {v}",
    "num_gpus": lambda v: f"--num-gpus {v}",
    "zero_stage": lambda v: f"--set deepspeed=examples/deepspeed/ds_z{v}_config.json",
    "enable_liger_kernel": lambda v: f"--set enable_liger_kernel={str(v).lower()}",
    "gradient_checkpointing": lambda v: f"--set disable_gradient_checkpointing={str(not v).lower()}",
}


def flag_for(changes: dict[str, Any], description: str = "") -> str:
    """The options that make one fit option's *changes* (``{"quantization_bit": 4}`` -> ``--quant 4``)."""
    if not changes or any(key not in _FLAGS for key in changes):
        return description or str(changes)
    return " ".join(_FLAGS[key](value) for key, value in changes.items())


def estimate_memory(ctx: Context) -> None:
    from lfgen.builder.estimates import estimate

    gpu = ctx.hardware.gpu
    ctx.estimate = estimate(ctx.model_name, ctx.config, gpu.name, gpu.memory_gb, ctx.options.num_gpus,
                            ctx.headroom, seq_len=ctx.seq_len, images=images(ctx))


def quantization(ctx: Context) -> None:
    """--quant 4|8: bitsandbytes quantization of the frozen model (QLoRA); the compute dtype is the precision's."""
    bits = ctx.options.quant
    if bits is None:
        return
    method = ctx.get("finetuning_type", "lora")
    if method not in ("lora", "oft"):
        raise InputError(f"--quant {bits}: LlamaFactory quantizes only LoRA and OFT training (finetuning_type is "
                         f"{method}); drop --quant or train with finetuning_type lora")
    dtype = "bf16" if ctx.get("bf16") else "fp16" if ctx.get("fp16") else "fp32"
    ctx.fixed["quantization_bit"] = (bits, "USER", f"you set it (--quant {bits}): bitsandbytes {bits}-bit weights "
                                                   f"(QLoRA), computing in {dtype} as R-HW-PRECISION chose")


def _headroom(ctx: Context, gpu: Gpu) -> None:
    headroom = ctx.headroom
    if ctx.model_spec is not None:
        return  # the estimator sized the batch for this very model; the seed's 7B figure adds nothing
    figure = re.search(r"~(\d+)\s*GB", ctx.preset.seed_figures.vram) if ctx.preset else None
    if figure and float(figure.group(1)) > gpu.memory_gb * (1 - headroom):
        ctx.warn("R-HW-HEADROOM", f"seed 002 puts the {ctx.preset.name} preset at ~{figure.group(1)} GB for a 7B "
                                  f"model, which leaves less than {headroom:.0%} of {gpu.name}'s {gpu.memory_gb:g} GB "
                                  "free; consider a lighter preset or quantization_bit 4")


def user_precision(ctx: Context) -> None:
    wanted = ctx.options.precision
    if wanted is not None:
        for key in ("bf16", "fp16"):
            ctx.fixed[key] = (wanted == key, "USER", f"you set it (--precision {wanted})")


def _precision(ctx: Context, gpu: Gpu, asked: str) -> None:
    if gpu.bf16 is None:
        ctx.warn("R-HW-PRECISION", f"{gpu.name}: bf16 support unknown with --gpu-mem; keeping bf16 "
                                   f"{ctx.get('bf16')} (pass --gpu NAME to check)")
    elif gpu.bf16:
        ctx.choose("bf16", True, "R-HW-PRECISION", f"{gpu.name} ({gpu.arch}) supports bf16 mixed precision",
                   asked=asked)
    else:
        ctx.choose("bf16", False, "R-HW-PRECISION",
                   f"{gpu.name} ({gpu.arch}) has no bf16: train in fp32 (seed 001: fp16 LoRA went NaN)", asked=asked)

