"""The rules of data size at the extremes: evaluation sized by its cost (R-EVAL-SIZE) and very large data
(R-DATA-LARGE: one epoch, a short warmup, more tokenizing processes, fewer checkpoints).

``eval_size`` runs once the batch is known (the evaluation's cost depends on it) and before R-DATA-STEPS counts the
optimizer steps; ``evaluations`` is the interval rule R-DATA-STEPS asks for.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lfgen.builder.context import Context
from lfgen.catalogs import rules


def large(ctx: Context, n: int) -> bool:
    return n > int(rules.rule("R-DATA-LARGE").table("from_rows"))


def epochs_and_warmup(ctx: Context, n: int, count: str, asked: str | None) -> bool:
    """R-DATA-LARGE's epochs, warmup and tokenizing workers; False when N is not large (the seed's bands decide)."""
    if not large(ctx, n):
        return False
    spec = rules.rule("R-DATA-LARGE")
    if ctx.shape.applies("R-DATA-EPOCHS"):
        band = rules.band("R-DATA-EPOCHS", n)
        ctx.choose("num_train_epochs", float(spec.table("epochs")), "R-DATA-LARGE",
                   f"{count}: one epoch, the low end of seed 002's {band['range'][0]}-{band['range'][1]} for large data "
                   "(Unsloth: fewer epochs on large data)", asked=asked,
                   alternative=f"seed 002's band allows {band['range'][1]} epochs; pass --epochs {band['range'][1]}")
    ratio = float(spec.table("warmup_ratio"))
    seed = rules.band("R-DATA-WARMUP", n)["value"]
    ctx.choose("warmup_ratio", ratio, "R-DATA-LARGE", f"{count}: warmup {ratio:g} (QLoRA's), at most "
                                                     f"{spec.table('max_warmup_steps')} steps", asked=asked,
               alternative=f"seed 002: large data warms up over {seed:g}-0.2 of the run; pass --set warmup_ratio={seed:g}")
    workers = int(spec.table("preprocessing_num_workers"))
    ctx.choose("preprocessing_num_workers", workers, "R-DATA-LARGE",
               f"{count}: tokenize in {workers} processes (LlamaFactory's examples); one process takes many minutes")
    return True


def cap_warmup(ctx: Context, total: int) -> None:
    """R-DATA-LARGE: a warmup of at most max_warmup_steps optimizer steps."""
    decision = ctx.decisions.get("warmup_ratio")
    most = int(rules.rule("R-DATA-LARGE").table("max_warmup_steps"))
    ratio = ctx.get("warmup_ratio")
    if decision is None or decision.rule != "R-DATA-LARGE" or not isinstance(ratio, (int, float)) \
            or math.ceil(ratio * total) <= most:
        return
    capped = math.floor(most / total * 1e4) / 1e4  # ratio x steps rounds up: stay at or under the cap
    ctx.choose("warmup_ratio", capped, "R-DATA-LARGE",
               f"{ratio:g} x {total:,} optimizer steps would warm up for {math.ceil(ratio * total):,} steps; "
               f"{capped:g} keeps it to {math.ceil(capped * total)} (a few hundred steps, RULES.md §7.4)",
               alternative=decision.alternative)


# --- R-EVAL-SIZE ------------------------------------------------------------------------------------


def optimizer_steps_of(ctx: Context, n: int) -> tuple[int, str]:
    """Optimizer steps of the run as the Hugging Face Trainer counts them, and the arithmetic."""
    val = ctx.get("val_size", 0) or 0
    held = math.ceil(val * n) if 0 < val < 1 else int(val)
    train = max(1, n - held)
    micro = int(ctx.get("per_device_train_batch_size", 8))
    accumulation = int(ctx.get("gradient_accumulation_steps", 1))
    gpus = ctx.options.num_gpus
    from lfgen.models.time import optimizer_steps  # the Trainer's arithmetic, one home (the time estimate's)

    batches = math.ceil(train / (micro * gpus))
    epochs = float(ctx.get("num_train_epochs", 3.0))
    max_steps = ctx.get("max_steps")
    max_steps = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    total, per_epoch = optimizer_steps(train, micro, gpus, accumulation, epochs, max_steps)
    split = f"{train:,} training samples ({n:,} - {held:,} for val_size {val:g})" if held else f"{train:,} samples"
    gpu_text = f" x {gpus} GPUs" if gpus > 1 else ""
    how = (f"{split} / micro-batch {micro}{gpu_text} = {batches:,} batches / accumulation {accumulation} = "
           f"{per_epoch:,} steps per epoch")
    if max_steps:
        return max_steps, f"max_steps {max_steps:,} (instead of {how})"
    return total, f"{how} x {epochs:g} epochs = {total:,} optimizer steps"




def held_rows(n: int) -> int:
    """R-EVAL-SIZE's held-out rows for N training rows."""
    spec = rules.rule("R-EVAL-SIZE")
    share, least, most = float(spec.table("share")), int(spec.table("min_rows")), int(spec.table("max_rows"))
    floor = min(least, math.floor(float(spec.table("max_share")) * n))
    return min(most, max(math.ceil(share * n), floor))


def eval_size(ctx: Context) -> None:
    """R-EVAL-SIZE: the held-out rows, as a share or LlamaFactory's integer count, for a run that evaluates."""
    n = ctx.samples
    if n is None or ctx.get("eval_strategy", "no") == "no" or ctx.get("eval_dataset") or "val_size" in ctx.fixed:
        return
    spec = rules.rule("R-EVAL-SIZE")
    share = float(spec.table("share"))
    held = held_rows(n)
    asked = "--samples" if ctx.options.samples else "--dataset-dir" if ctx.options.dataset_dir else None
    if held == math.ceil(share * n):
        value: Any = share
        why = f"N = {n:,}: {share:g} holds out {held:,} rows (the seed's share)"
    else:
        value = held
        why = (f"N = {n:,}: {share:g} would hold out {math.ceil(share * n):,} rows; "
               + (f"{held:,} (at most {spec.table('max_rows'):,}) measure the eval loss as well at a fraction of the "
                  "cost" if held < share * n else
                  f"{held:,} (at least {spec.table('min_rows')}, at most {spec.table('max_share'):.0%} of N)")
               + ": LlamaFactory's integer val_size counts rows")
    decision = ctx.decisions.get("val_size")
    if value == share and decision is not None and decision.value == share and "val_size" not in ctx.fixed:
        ctx.decisions["val_size"] = dataclasses.replace(decision, reason=f"{decision.reason}; R-EVAL-SIZE: {why}")
    else:
        ctx.choose("val_size", value, "R-EVAL-SIZE", why, asked=asked,
                   alternative=f"the seed's val_size {share:g}" if value != share else None)
    fewer, cost = _within_budget(ctx, n, held)
    if fewer < held:
        held = fewer
        ctx.choose("val_size", fewer, "R-EVAL-SIZE", f"{why}; even at {spec.table('evaluations')['min']} evaluations "
                                                     f"that costs {cost} of the training time, so {fewer:,} rows "
                                                     f"keep it near {float(spec.table('eval_budget')):.0%}",
                   asked=asked, alternative=f"the seed's val_size {share:g}")
    if held < int(spec.table("min_rows")):
        ctx.warn("R-EVAL-SIZE", f"N = {n:,}: only {held} held-out rows; an eval loss over {held} rows moves by more "
                                "than runs usually differ, so rank runs by it with care: a separate, larger "
                                "eval_dataset (--set eval_dataset=NAME) or lfgen eval on your own questions is a "
                                "steadier verdict")


def _within_budget(ctx: Context, n: int, held: int) -> tuple[int, str]:
    """Fewer held-out rows when evaluating them even the fewest times costs more than eval_budget of the training."""
    spec = rules.rule("R-EVAL-SIZE")
    least, budget = int(spec.table("evaluations")["min"]), float(spec.table("eval_budget"))
    total, _ = optimizer_steps_of(ctx, n)
    share, basis = eval_share(ctx, total, max(1, total // least))
    if share is None or share <= 2 * budget:  # a soft budget: fewer evaluations handle the rest (evaluations())
        return held, ""
    rows = max(int(spec.table("min_rows")), math.floor(held * budget / share / 50) * 50)  # a round number
    return min(held, rows), f"~{share:.0%} ({basis})"


def evaluations(ctx: Context, total: int, how: str, seed_steps: int) -> tuple[int, str]:
    """R-EVAL-SIZE's evaluation interval: the seed's eval_steps where the run evaluates min-max times, else about
    target times; then fewer, while evaluation costs more than eval_budget of the training."""
    spec = rules.rule("R-EVAL-SIZE")
    bounds = spec.table("evaluations")
    least, target, most = int(bounds["min"]), int(bounds["target"]), int(bounds["max"])
    count = total // seed_steps
    if least <= count <= most:
        steps, why = seed_steps, f"{how}: the seed's {seed_steps} evaluates {count} times"
    elif count > most:
        steps = math.ceil(total / target)
        why = (f"{how}; the seed's {seed_steps} would evaluate {count:,} times (R-EVAL-SIZE: {least}-{most} are "
               f"enough): every {steps:,} steps evaluates {total // steps} times")
    else:
        steps = max(1, total // least)
        why = (f"{how}; {total:,} // {least} = every {steps} steps evaluates {total // steps} times "
               f"(the seed's {seed_steps} needs {least * seed_steps:,} steps)")
    share, basis = eval_share(ctx, total, steps)
    budget = float(spec.table("eval_budget"))
    if share is not None and share > budget and total // steps > least:
        steps = max(1, total // least)
        share, basis = eval_share(ctx, total, steps)
        why += f"; evaluating that often costs over {budget:.0%} of the training, so every {steps} steps ({least} times)"
    if share is not None:
        why += f"; evaluation ~{share:.0%} of the training time ({basis})"
    return steps, why


def eval_share(ctx: Context, total: int, eval_steps: int) -> tuple[float | None, str]:
    """Evaluation time over training time: lfgen's time model with a known model and GPU, else rows arithmetic."""
    n = ctx.samples or 0
    val = ctx.get("val_size", 0) or 0
    held = math.ceil(val * n) if 0 < val < 1 else int(val)
    if held <= 0 or total <= 0:
        return None, ""
    evals = total // eval_steps + (0 if total % eval_steps == 0 else 1)
    hardware = ctx.hardware
    if hardware is not None and hardware.gpu.peak is not None and ctx.model_spec is not None and not ctx.no_estimate:
        from lfgen.builder.timing import estimate_config_time

        config = {**{k: v[0] for k, v in ctx.fixed.items()}, **ctx.config, "eval_steps": eval_steps}
        cost = estimate_config_time(str(ctx.model_name), config, hardware.gpu, hardware.num_gpus, n, ctx.lengths)
        if cost.time is not None and cost.time["train_s"] > 0:
            return cost.time["eval_s"] / cost.time["train_s"], "lfgen's time model"
    epochs = float(ctx.get("num_train_epochs", 3.0))
    trained = max(1, n - held) * epochs
    return evals * held / (3 * trained), "forward-only rows against 3 x the trained rows"
