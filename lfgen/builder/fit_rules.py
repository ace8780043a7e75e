"""R-HW-FIT: a config estimated not to fit its GPU is an error naming the cheapest fix (``require_fit``), and a preset
that steps down (auto) takes the registry's steps in order until it fits (``next_step``; ``steps.build`` rebuilds with
each one, so alpha, the learning rate and the batch follow).

The steps are data: R-HW-FIT's ``steps`` in presets/rules.yaml, one entry each. An entry names the LlamaFactory key it
changes and how (``set`` a value, or ``halve_to`` a floor), and may require a package (``needs``) or a condition
(``when``: a name of ``CONDITIONS``). A step for a new kind of run is one entry, plus a condition here if it needs one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from lfgen.builder.context import Context, same
from lfgen.catalogs import machine, rules
from lfgen.errors import InputError


class Step(BaseModel):
    """One entry of R-HW-FIT's steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    set: Any = None  # the value the step writes
    halve_to: int | None = None  # or: halve the current value, not below this floor
    band: str | None = None  # ... nor below the low end of this data-size rule's band for N, when N is known
    needs: str | None = None  # a package that must be installed (lfgen.catalogs.machine.installed)
    when: str | None = None  # a condition of CONDITIONS
    changes: str  # what the run learns differently: nothing, capacity, precision, data, ...
    why: str


# Conditions a step may require, by name (presets/rules.yaml says which).
CONDITIONS: dict[str, Callable[[Context], bool]] = {
    "quantizable": lambda ctx: ctx.shape.method.quantize,
    "multimodal": lambda ctx: ctx.model_spec is not None and bool(ctx.model_spec.multimodal),
}


@dataclass(frozen=True)
class Taken:
    """A step auto took: the key, its new value, why, and the estimate before it (GiB needed at micro-batch 1)."""

    key: str
    value: Any
    before: Any
    reason: str
    needed_gib: float

    def line(self) -> str:
        return f"{self.key} {self.before} -> {self.value} (at {self.needed_gib:.1f} GiB)"


@functools.cache
def steps() -> tuple[Step, ...]:
    return tuple(Step.model_validate(row) for row in rules.rule("R-HW-FIT").table("steps"))


def _current(ctx: Context, key: str) -> Any:
    value = ctx.get(key)
    if value is None:
        from lfgen.catalogs.llamafactory import snapshot

        spec = snapshot().keys.get(key)
        value = spec.default if spec is not None else None
    return value


def _applies(ctx: Context, step: Step) -> bool:
    if step.needs is not None and not machine.installed(step.needs):
        return False
    if step.when is not None and not CONDITIONS[step.when](ctx):
        return False
    if not ctx.shape.reads(step.key):
        return False
    fixed = ctx.fixed.get(step.key)
    return fixed is None or fixed[1] == "R-HW-FIT"  # never a value you set (or a base file has)


def _value(ctx: Context, step: Step) -> Any:
    """The value the step moves its key to, or None when it has gone as far as it goes."""
    current = _current(ctx, step.key)
    if step.halve_to is not None:
        floor = step.halve_to
        if step.band is not None and ctx.samples is not None:
            floor = max(floor, int(rules.band(step.band, ctx.samples)["range"][0]))
        if not isinstance(current, int) or isinstance(current, bool) or current // 2 < floor:
            return None
        return current // 2
    return None if same(current, step.set) else step.set


def next_step(ctx: Context, taken: list[Taken]) -> Taken | None:
    """The next step of a build that does not fit, or None (it fits, nothing is estimated, or no step is left)."""
    fit = ctx.fit
    if fit is None or fit.fits:
        return None
    for step in steps():
        if not _applies(ctx, step):
            continue
        value = _value(ctx, step)
        if value is None:
            continue
        before = _current(ctx, step.key)
        before = "unset" if before is None else before
        changes = "" if step.changes == "nothing" else f"; it changes the run's {step.changes}"
        reason = (f"R-HW-FIT step {len(taken) + 1}: {step.key} {before} -> {value} ({step.why}{changes}): "
                  f"{fit.estimate.needed:.1f} GiB at micro-batch 1 did not fit {fit.budget_gib:.1f}")
        return Taken(step.key, value, before, reason, fit.estimate.needed)
    return None


def require_fit(result: Any) -> None:
    """An error (exit 1) when the build's estimate does not fit its GPU, naming the cheapest fix with its estimate."""
    fit, hardware = result.fit, result.hardware
    if fit is None or fit.fits or hardware is None:
        return
    from lfgen.builder.sizing import flag_for

    gpu = hardware.gpu
    model = result.config.get("model_name_or_path")
    stepped = f" after auto's steps ({'; '.join(t.line() for t in result.fit_steps)})" if result.fit_steps else ""
    where = f"{gpu.name}" + (f" x {hardware.num_gpus}" if hardware.num_gpus > 1 else "")
    fixes = [f"{flag_for(o.changes, o.description)} (~{o.estimate.needed:.1f} GiB: {o.description})"
             for o in fit.options]
    fix = (f"cheapest fix: {fixes[0]}" + (f"; also {'; '.join(fixes[1:])}" if fixes[1:] else "")
           if fixes else "none of lfgen's single changes fits")
    at, offload = _offload_advice(result)
    raise InputError(f"--gpu: {model} does not fit on {where}{stepped}: {fit.estimate.needed:.1f} GiB at "
                     f"micro-batch 1{at}, {fit.budget_gib:.1f} usable with R-HW-HEADROOM's share kept free "
                     f"(got {gpu.memory_gb:g} GiB); {fix}{offload}; or --allow-unfit to write it anyway")


def _offload_advice(result: Any) -> tuple[str, str]:
    """(where the figure was estimated, the CPU offload alternative) for an unfit build (R-MULTI-DS): when the ladder
    ended at CPU offload, the figure is with it; when offload was not tried (one GPU, or a stage you chose), its
    estimate, for a full fine-tune or several GPUs."""
    from lfgen.builder.model import spec_of
    from lfgen.models import estimate_memory
    from lfgen.models.zero import offloads

    fit, num = result.fit, result.hardware.num_gpus
    settings = fit.estimate.settings
    if any(offloads(settings)):
        return (f" with ZeRO-{settings.zero_stage} CPU offload (R-MULTI-DS's last stage; ~{fit.estimate.cpu_gib:.0f} "
                "GiB of CPU RAM)"), ""
    if num < 2 and (result.shape is None or result.shape.method.family != "full"):
        return "", ""
    offloaded = estimate_memory(spec_of(str(result.config.get("model_name_or_path"))), settings, micro_batch=1,
                                zero_stage=3, deepspeed=True, offload_optimizer="cpu", offload_param="cpu")
    how = ("lfgen's ladder writes it when nothing lighter fits, unless --zero or deepspeed is set" if num > 1 else
           "lfgen writes it on several GPUs (--num-gpus 2 or more) when nothing lighter fits")
    return "", (f"; DeepSpeed ZeRO-3 with CPU offload would need ~{offloaded.needed:.1f} GiB per GPU and "
                f"~{offloaded.cpu_gib:.0f} GiB of CPU RAM, and train slower ({how})")
