"""The hardware steps: precision, attention and the batch for the GPU (R-HW-*), fit-to-GPU with the
memory estimate when the model is known, and the estimate itself."""

from __future__ import annotations

import re
from typing import Any

from lfgen.builder import multi_gpu, speed_rules
from lfgen.builder.context import Context
from lfgen.catalogs import machine, rules
from lfgen.catalogs.gpus import Gpu, Hardware, find_gpu, gpu_with_memory
from lfgen.errors import InputError


def hardware(ctx: Context) -> None:
    """The target the config is sized for: --gpu (a catalog name, or cpu), --gpu-mem, else this machine's GPU
    (lfgen.catalogs.machine; a base file keeps the hardware it was written for unless one is named)."""
    opts = ctx.options
    if opts.gpu is not None and opts.gpu_mem is not None:
        raise InputError("--gpu and --gpu-mem: give one of them (the catalog knows each GPU's memory)")
    if opts.zero is not None and opts.num_gpus < 2:
        raise InputError(f"--zero: DeepSpeed ZeRO shards across GPUs (got --zero {opts.zero} with --num-gpus "
                         f"{opts.num_gpus}); add --num-gpus N or drop --zero")
    gpu: Gpu | None = None
    asked: str | None = "--gpu" if opts.gpu else "--gpu-mem" if opts.gpu_mem else None
    if opts.gpu is not None and opts.gpu.strip().lower() == machine.CPU:
        return cpu_target(ctx, "you asked for a CPU run (--gpu cpu)", asked)
    if opts.gpu:
        gpu = find_gpu(opts.gpu)
    elif opts.gpu_mem:
        gpu = gpu_with_memory(opts.gpu_mem)
    elif not ctx.from_file_only:
        found = machine.target()
        ctx.detected = found
        if found.is_cpu:
            return cpu_target(ctx, found.how, None)
        if found.name is None:
            ctx.warn("R-HW-BATCH", f"{found.seen} is not in lfgen's GPU catalog: the config assumes a GPU with bf16 "
                                   "and is not sized for it; pass --gpu NAME or --gpu-mem GB")
        else:
            gpu = find_gpu(found.name)
    if gpu is None:
        if opts.num_gpus > 1:
            ctx.warn("R-HW-BATCH", "--num-gpus without --gpu or --gpu-mem: the batch is not sized for the GPUs")
        return
    ctx.hardware = Hardware(gpu=gpu, num_gpus=opts.num_gpus)
    _precision(ctx, gpu, asked)
    speed_rules.attention(ctx, gpu, asked)
    speed_rules.liger(ctx)
    multi_gpu.keys(ctx)
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
    multi_gpu.choose_zero(ctx, None)
    _headroom(ctx, gpu)
    effective = micro * accumulation * opts.num_gpus
    ctx.choose("per_device_train_batch_size", micro, "R-HW-BATCH",
               f"{gpu.name} ({gpu.memory_gb:g} GB) is in the {tier} tier: micro-batch {micro}{pairs}", asked=asked)
    ctx.choose("gradient_accumulation_steps", accumulation, "R-HW-BATCH",
               f"{micro} x {accumulation}{gpus} = effective batch {effective} (seed 002 keeps it at 32-64)",
               asked=asked)


def cpu_target(ctx: Context, how: str, asked: str | None) -> None:
    """R-HW-CPU: what a CPU run needs: no half precision, no FlashAttention, use_cpu, a small micro-batch."""
    opts = ctx.options
    if opts.num_gpus > 1:
        raise InputError(f"--num-gpus: a CPU run trains in one process (got --num-gpus {opts.num_gpus} for a CPU "
                         "run); drop --num-gpus or name the GPUs with --gpu NAME")
    if opts.quant is not None:
        raise InputError(f"--quant: bitsandbytes quantization needs a GPU (got --quant {opts.quant} for a CPU run); "
                         "drop --quant, or name the GPU with --gpu NAME")
    ctx.cpu = True
    if asked is None:
        ctx.warn("R-HW-CPU", f"{how} and none was named: wrote a CPU config (no bf16, no FlashAttention, use_cpu); "
                             "pass --gpu NAME for the GPU the run will use")
    spec = rules.rule("R-HW-CPU")
    ctx.choose("bf16", False, "R-HW-CPU", f"a CPU run ({how}): no bf16 autocast (LlamaFactory refuses bf16 without a "
                                          "GPU unless use_cpu is set, and it is slow on most CPUs); the weights "
                                          "load in the checkpoint's own dtype", asked=asked)
    ctx.choose("use_cpu", True, "R-HW-CPU", "the Trainer runs on the CPU even where a GPU is visible",
               asked=asked)
    speed_rules.attention(ctx, None, asked)
    micro, target = int(spec.table("micro_batch")), rules.effective_batch_range()[0]
    ctx.choose("per_device_train_batch_size", micro, "R-HW-CPU",
               f"micro-batch {micro}: a CPU run is limited by speed, not memory", asked=asked)
    ctx.choose("gradient_accumulation_steps", max(1, target // micro), "R-HW-BATCH",
               f"{micro} x {max(1, target // micro)} = effective batch {micro * max(1, target // micro)} "
               "(seed 002 keeps it at 32-64)", asked=asked)


def _merged(ctx: Context) -> dict[str, Any]:
    """The config so far with the keys the user or the file fixed that no rule has chosen yet."""
    return {**ctx.config, **{k: v[0] for k, v in ctx.fixed.items() if k not in ctx.config}}


def images(ctx: Context) -> tuple[int, int] | None:
    """The peak sample's vision patches and image tokens, when the data's images were measured (R-VLM-PIXELS)."""
    lengths = ctx.lengths
    return (lengths.image_patches, lengths.image_tokens) if lengths is not None and lengths.image_max_pixels else None


def _fit_to_gpu(ctx: Context, gpu: Gpu, asked: str | None, seed_way: str) -> None:
    """R-HW-HEADROOM with the estimator: the largest micro-batch that leaves the headroom free, on several GPUs with
    the lowest ZeRO stage that fits (R-MULTI-DS); a shape's own step-down (a vision-language run's image_max_pixels,
    R-VLM-PIXELS) before micro-batch 1 is given up; gradient checkpointing off where it still fits (R-HW-THROUGHPUT)."""
    from lfgen.builder import vlm_rules
    from lfgen.builder.estimates import fit

    headroom = ctx.headroom
    model = ctx.model_name
    target, _ = rules.effective_batch_range()
    result, stage = multi_gpu.fit_across(ctx, gpu, _merged(ctx), images(ctx))

    def try_fit(changes: dict[str, Any], seq_len: int | None, found: tuple[int, int] | None):
        config = multi_gpu.at_stage({**_merged(ctx), **changes}, stage)  # the ZeRO stage the ladder ended on
        return fit(model, config, gpu.name, gpu.memory_gb, ctx.options.num_gpus, headroom, target, seq_len=seq_len,
                   images=found)

    if not result.fits:
        result = vlm_rules.step_down(ctx, try_fit, result) or result
    ctx.fit = result
    multi_gpu.choose_zero(ctx, stage, result)
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
    speed_rules.checkpointing(ctx, gpu, result, images(ctx))


# A fit option's change -> the flag that asks for it (the advice is a command line the user can pass back).
_FLAGS = {
    "quantization_bit": lambda v: f"--quant {v}",
    "cutoff_len": lambda v: f"--cutoff-len {v}",
    "num_gpus": lambda v: f"--num-gpus {v}",
    "zero_stage": lambda v: f"--zero {v}",
    "enable_liger_kernel": lambda v: f"--set enable_liger_kernel={str(v).lower()}",
    "gradient_checkpointing": lambda v: f"--set disable_gradient_checkpointing={str(not v).lower()}",
    # no flag of their own: --zero 3 names ds_z3_config.json (no offload); --num-gpus N alone tries offload last
    "offload_optimizer": lambda v: "", "offload_param": lambda v: "",
}


def flag_for(changes: dict[str, Any], description: str = "") -> str:
    """The options that make one fit option's *changes* (``{"quantization_bit": 4}`` -> ``--quant 4``); a change
    that needs a package this Python lacks says so (``--set enable_liger_kernel=true (after pip install ...)``)."""
    if not changes or any(key not in _FLAGS for key in changes):
        return description or str(changes)
    flags = " ".join(filter(None, (_FLAGS[key](value) for key, value in changes.items())))
    missing = [machine.PACKAGES[p] for key, p in _NEEDS.items() if changes.get(key) and not machine.installed(p)]
    return f"{flags} (after pip install {' '.join(missing)})" if missing else flags


# A fit option's change -> the package it needs where LlamaFactory trains (its parser refuses the key without it).
_NEEDS = {"enable_liger_kernel": "liger_kernel", "zero_stage": "deepspeed"}


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
    dtype = "bf16" if ctx.get("bf16") else "fp16" if ctx.get("fp16") else "the checkpoint's own dtype"
    ctx.fixed["quantization_bit"] = (bits, "USER", f"you set it (--quant {bits}): bitsandbytes {bits}-bit weights "
                                                   f"(QLoRA), computing in {dtype} as the precision rule chose")


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


def _precision(ctx: Context, gpu: Gpu, asked: str | None) -> None:
    if gpu.bf16 is None:
        ctx.warn("R-HW-PRECISION", f"{gpu.name}: bf16 support unknown with --gpu-mem; keeping bf16 "
                                   f"{ctx.get('bf16')} (pass --gpu NAME to check)")
    elif gpu.bf16:
        ctx.choose("bf16", True, "R-HW-PRECISION", f"{gpu.name} ({gpu.arch}) supports bf16 mixed precision",
                   asked=asked)
    else:
        spec = rules.rule("R-HW-FP16-AMP")
        ctx.choose("bf16", False, "R-HW-FP16-AMP", f"{gpu.name} ({gpu.arch}) has no bf16 tensor cores", asked=asked)
        ctx.choose("fp16", True, "R-HW-FP16-AMP",
                   f"{gpu.name} ({gpu.arch}) has no bf16: fp16 mixed precision (autocast with a loss scaler; "
                   "LlamaFactory keeps the trainable weights in fp32). With neither flag LlamaFactory does not train "
                   "in fp32: " + spec.table("without_flags"), asked=asked,
                   alternative="seed 001 / R-HW-PRECISION: fp32 (pass --precision fp32; in LlamaFactory 0.9.5 that is "
                               "the checkpoint's own dtype with no autocast and no loss scaling)")
