"""Warnings about the finished config: the combinations the seeds warn against."""

from __future__ import annotations

from lfgen.builder.context import EXPLICIT_KEYS, Context
from lfgen.catalogs import rules


def checks(ctx: Context) -> None:
    cfg = ctx.config
    lr, rank, alpha = cfg.get("learning_rate"), cfg.get("lora_rank"), cfg.get("lora_alpha")
    lora = cfg.get("finetuning_type", "lora") == "lora"
    _learning_rate(ctx, lr)
    if lora and isinstance(rank, int) and isinstance(alpha, int) and alpha / rank > 2 and isinstance(lr, (int, float)) \
            and lr >= 2e-4:
        ctx.warn("R-LR", f"alpha/rank = {alpha / rank:g} with learning_rate {lr:g}: seed 004 says a higher alpha "
                         "may need a lower learning rate (try 1e-4)")
    target = str(cfg.get("lora_target", ""))
    if lora and target and set(target.split(",")) <= {"o_proj", "down_proj"}:
        ctx.warn("R-TARGET", f"lora_target {target}: seed 003 says targeting only o_proj or down_proj usually "
                             "works poorly; add q_proj,v_proj or use all")
    micro, accumulation = cfg.get("per_device_train_batch_size"), cfg.get("gradient_accumulation_steps")
    if isinstance(micro, int) and isinstance(accumulation, int):
        effective = micro * accumulation * ctx.options.num_gpus
        lo, hi = rules.effective_batch_range()
        if not lo <= effective <= hi:
            ctx.warn("R-HW-BATCH", f"effective batch {micro} x {accumulation} x {ctx.options.num_gpus} GPU(s) = "
                                   f"{effective}; seed 002 keeps it at {lo}-{hi}")
    gpu = ctx.hardware.gpu if ctx.hardware else None
    if cfg.get("fp16") is True and (gpu is None or gpu.bf16 is not False) and not ctx.cpu:
        where = f"{gpu.name} has bf16" if gpu is not None and gpu.bf16 else "bf16 is safer where the GPU has it"
        ctx.warn("R-HW-PRECISION", f"fp16 is on ({where}): seed 001 saw LoRA training go NaN after the first batch "
                                   "in plain fp16; prefer bf16 (fp16 mixed precision is the choice only on GPUs "
                                   "without bf16, R-HW-FP16-AMP)")
    if gpu is not None and gpu.bf16 is False and cfg.get("bf16") is True:
        ctx.warn("R-HW-PRECISION", f"bf16 is on but {gpu.name} has no bf16 tensor cores (torch emulates it, slowly); "
                                   "drop --precision bf16 for fp16 mixed precision (R-HW-FP16-AMP)")
    if gpu is not None and cfg.get("bf16") is False and not cfg.get("fp16") and not cfg.get("pure_bf16"):
        from lfgen.builder.estimates import checkpoint_dtype

        if checkpoint_dtype(str(cfg.get("model_name_or_path", ""))) != "fp32":
            ctx.warn("R-HW-FP16-AMP", "bf16 and fp16 are off: LlamaFactory 0.9.5 does not train in fp32 then: "
                                      + rules.rule("R-HW-FP16-AMP").table("without_flags")
                                      + f"; on {gpu.name} use " + ("bf16" if gpu.bf16 else "fp16: true (mixed "
                                                                    "precision with a loss scaler)"))
    if gpu is not None and gpu.fa2 is False and cfg.get("flash_attn") in ("fa2", "fa3"):
        ctx.warn("R-HW-FA", f"flash_attn {cfg['flash_attn']} on {gpu.name}, which does not support it")
    elif cfg.get("flash_attn") == "fa2" and (gpu is not None or ctx.cpu):
        from lfgen.catalogs.machine import installed

        if ctx.cpu or not installed("flash_attn"):
            ctx.warn("R-HW-ATTN", "flash_attn fa2: " + ("a CPU run has no FlashAttention" if ctx.cpu else
                                  "flash-attn is not installed here, so LlamaFactory warns and uses the default "
                                  "attention (Gemma 2: eager); pip install flash-attn"))
    from lfgen.builder.speed_rules import packing_advice

    packing_advice(ctx)
    if ctx.from_file_only:
        for key in EXPLICIT_KEYS:  # a key the file sets is the file's, even where a rule the user asked replaced it
            if key in ctx.config and key not in ctx.fixed and key not in ctx.file_keys:
                default = ("LlamaFactory's own flag, default false" if key == "plot_loss" else
                           "LlamaFactory's default depends on the installed transformers")
                ctx.warn("LF-EXPLICIT", f"the file does not set {key}; lfgen writes {key}: {ctx.config[key]} "
                                        f"({default})")



OFF_BY = 3.0  # a learning rate this many times off its shape's rule is worth a warning


def _learning_rate(ctx: Context, lr: object) -> None:
    """A learning rate far from its shape's rule: R-LR-RANK's for LoRA SFT (seed 001's range named beside it),
    R-METHOD-LR's for full and freeze, R-STAGE-LR's for a preference stage (a DPO run at the LoRA SFT rate)."""
    rate = ctx.rate
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0 or rate is None:
        return
    if 1 / OFF_BY <= lr / rate.value <= OFF_BY:
        return
    times = f"{lr / rate.value:.0f}x" if lr > rate.value else f"1/{rate.value / lr:.0f} of"
    seed = ""
    if rate.rule == "R-LR-RANK":
        low, high = rules.rule("R-LR").table("range")
        seed = f"; the seeds' LoRA range is {low:g}-{high:g} (seed 001: 5e-6 too slow, 1e-3 oscillates)"
    ctx.warn(rate.rule, f"learning_rate {lr:g} is {times} {rate.rule}'s {rate.value:g} for {ctx.shape.label}{seed}")
