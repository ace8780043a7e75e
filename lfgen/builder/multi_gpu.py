"""Several GPUs: the keys every LlamaFactory multi-GPU example writes (R-MULTI-KEYS), the DeepSpeed stage the memory
estimate fits and its JSON, written beside the config (R-MULTI-DS), and a sweep's shared tokenized data.

LlamaFactory's DeepSpeed JSONs live in its git repository (examples/deepspeed/), not in the wheel; lfgen ships
verbatim copies (lfgen/data/deepspeed/). A build names its file (``deepspeed: ds_z3_config.json``) and carries the
text in ``Build.files``; ``place`` points the config at the copy written beside it, or at lfgen's own copy when the
config is printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lfgen.builder.context import Context
from lfgen.catalogs import machine, rules
from lfgen.errors import InputError

# The ladder's stages: 0 plain DDP, 2 and 3 ZeRO, then ZeRO with CPU offload (R-MULTI-DS) -> LlamaFactory's file
DS_FILES: dict[int | str, str] = {2: "ds_z2_config.json", 3: "ds_z3_config.json",
                                  "2-offload": "ds_z2_offload_config.json", "3-offload": "ds_z3_offload_config.json"}
FILE_KEYS = ("deepspeed",)  # config keys whose value can name a file of Build.files
_PACKAGED = Path(__file__).resolve().parents[1] / "data" / "deepspeed"


def packaged(name: str) -> Path:
    """lfgen's copy of LlamaFactory's DeepSpeed config *name* (it exists wherever lfgen is installed)."""
    return _PACKAGED / name


def keys(ctx: Context) -> None:
    """R-MULTI-KEYS: the distributed run's timeout and workers, as every LlamaFactory example writes them."""
    if ctx.options.num_gpus < 2:
        return
    spec = rules.rule("R-MULTI-KEYS")
    for key, row in spec.table("keys").items():
        ctx.choose(key, row["value"], "R-MULTI-KEYS", f"{ctx.options.num_gpus} GPUs: {row['why']}")


def label(stage: int | str) -> str:
    """A stage of the ladder in words: plain DDP, ZeRO-2, ZeRO-3 with CPU offload."""
    if not stage:
        return "plain DDP"
    return f"ZeRO-{stage}" if isinstance(stage, int) else f"ZeRO-{str(stage)[0]} with CPU offload"


def _ladder(ctx: Context) -> list[int | str | None]:
    """The ZeRO stages to try, lowest first (R-METHOD-ZERO); [None]: keep the config's own (one GPU, or the user's).
    CPU offload comes after every stage on the GPUs alone fails and before more GPUs are advised (R-MULTI-DS): it fits
    far more, but each step moves the states over PCIe and runs Adam on the CPU."""
    fixed = ctx.fixed.get("deepspeed")
    if ctx.options.zero is not None:
        if fixed is not None and fixed[1] == "USER":
            raise InputError(f"--zero {ctx.options.zero}: conflicts with --set deepspeed={fixed[0]}; give one of them")
        return [ctx.options.zero]  # it replaces a base file's deepspeed: you asked
    if ctx.options.num_gpus < 2 or fixed is not None:
        return [None]
    # ZeRO-2 shards gradients and optimizer states: for a full fine-tune it costs what DDP's all-reduce costs. An
    # adapter's states are tiny, so a LoRA run either fits whole on each GPU (0: plain DDP) or needs its frozen weights
    # sharded (3).
    # ZeRO-2 offload keeps the 16-bit weights on each GPU and moves only the optimizer: faster than ZeRO-3 offload,
    # and for an adapter (tiny states) it buys nothing, so a LoRA run goes from ZeRO-3 to ZeRO-3 offload.
    return [2, 3, "2-offload", "3-offload"] if ctx.shape.method.family == "full" else [0, 3, "3-offload"]


def at_stage(config: dict[str, Any], stage: int | str | None) -> dict[str, Any]:
    """*config* at ZeRO *stage* (0: plain DDP; None: as the config has it)."""
    config = dict(config)
    if stage is not None:
        config.pop("deepspeed", None)
        if stage:
            config["deepspeed"] = DS_FILES[stage]
    return config


def fit_across(ctx: Context, gpu: Any, merged: dict[str, Any],
               images: tuple[int, int] | None = None) -> tuple[Any, int | str | None]:
    """The largest micro-batch that fits at the lowest ZeRO stage that fits; (the last try, its stage) when none does.
    *images*: a vision-language run's peak vision patches and image tokens (sizing.images)."""
    from lfgen.builder.estimates import fit

    target, _ = rules.effective_batch_range()
    result, stage, tries = None, None, []
    for stage in _ladder(ctx):
        result = fit(ctx.model_name, at_stage(merged, stage), gpu.name, gpu.memory_gb, ctx.options.num_gpus,
                     ctx.headroom, target, seq_len=ctx.seq_len, images=images)
        tries.append((stage, result))
        if result.fits:
            break
    ctx.zero_tries = tries
    return result, stage


def choose_zero(ctx: Context, stage: int | str | None, fit: Any = None) -> None:
    """R-MULTI-DS: write the stage that fits (or, with no estimate, LlamaFactory's example's: ZeRO-3 for a full
    fine-tune) and carry its JSON; plain DDP writes nothing."""
    num = ctx.options.num_gpus
    if num < 2 or "deepspeed" in ctx.fixed and ctx.options.zero is None:
        return
    if fit is None:  # no estimate: --zero, or LlamaFactory's full-parameter example (ds_z3), or plain DDP
        stage = ctx.options.zero if ctx.options.zero is not None else 3 if ctx.shape.method.family == "full" else 0
    if not stage:
        if ctx.options.zero == 0 and "deepspeed" in ctx.fixed:  # --zero 0 over a base file's deepspeed: plain DDP
            ctx.fixed.pop("deepspeed")
        return
    name = DS_FILES[stage]
    if ctx.options.zero is not None:
        rule_id, reason = "USER", f"you set it (--zero {stage}): LlamaFactory's {name}, written beside the config"
    else:
        rule_id, reason = "R-MULTI-DS", _why(ctx, stage, fit)
    ctx.choose("deepspeed", name, rule_id, reason, asked="--zero" if ctx.options.zero is not None else None)
    ctx.files[name] = packaged(name).read_text(encoding="utf-8")
    if isinstance(stage, str) and fit is not None and ctx.options.zero is None:
        ctx.warn("R-MULTI-DS", f"{label(stage)}: needs ~{fit.estimate.cpu_gib:.0f} GiB of free CPU RAM on the node "
                               f"and trains slower than on GPUs with room (every step moves the states over PCIe, "
                               "Adam runs on the CPU); its GPU figure leaves out DeepSpeed's own buffers, and "
                               "LlamaFactory users measured 2.4-3x it (#5977, #7282), so leave room or try a short "
                               "run first; more GPUs (--num-gpus) with ZeRO-3 avoid it")
    if not machine.installed("deepspeed"):
        ctx.warn("R-MULTI-DS", "deepspeed is not installed here, and LlamaFactory refuses a deepspeed config without "
                               "it: pip install deepspeed where the run trains")


_WHAT = {2: "shards gradients and Adam's states across the GPUs", 3: "also shards the weights, gathered layer by layer",
         "2-offload": "moves Adam's states, the fp32 master weights and the gradient partitions to CPU RAM",
         "3-offload": "moves Adam's states, the fp32 master weights, the gradient partitions and the weights to CPU RAM"}


def _why(ctx: Context, stage: int | str, fit: Any) -> str:
    num = ctx.options.num_gpus
    where = f"LlamaFactory's {DS_FILES[stage]}, written beside the config (its examples/deepspeed/ is not in the wheel)"
    if fit is None:
        return f"{ctx.shape.method.label} on {num} GPUs with no memory estimate: ZeRO-{stage}, as LlamaFactory's " \
               f"full-parameter example; {where}"
    tried = "; ".join(f"{label(s)} needs {r.estimate.needed:.1f} GiB at micro-batch 1"
                      for s, r in getattr(ctx, "zero_tries", [])[:-1] if not r.fits)
    verdict = (f"fits at micro-batch {fit.micro_batch} ({fit.estimate.needed:.1f} GiB per GPU)" if fit.fits else
               "the last stage lfgen estimates; it does not fit either")
    head = f"{label(stage)} {_WHAT[stage]} of {num} GPUs"
    if isinstance(stage, str):  # offload: what it costs besides the GPU memory it saves
        head = f"{label(stage)} on {num} GPUs {_WHAT[stage]}"
        verdict += (f", with ~{fit.estimate.cpu_gib:.0f} GiB of CPU RAM on the node (DeepSpeed's x 1.5 buffers "
                    "included); slower: every step moves the states over PCIe and runs Adam on the CPU")
    return f"{head}: {verdict}" + (f" ({tried})" if tried else "") + f"; {where}"


def place(result: Any, folder: str | Path | None) -> Any:
    """*result* (a Build) pointing at its files where they are: in *folder* (relative to the working directory, where
    the config's root is) when lfgen writes them there, else at lfgen's own copies (a config printed to stdout)."""
    if not result.files:
        return result
    config, decisions = dict(result.config), dict(result.decisions)
    for key in FILE_KEYS:
        name = config.get(key)
        if name not in result.files:
            continue
        if folder is None:
            path, where = str(packaged(name)), "lfgen's own copy (with -o lfgen writes it beside the config)"
        else:
            path = os.path.relpath(Path(folder).resolve() / name, Path.cwd())
            where = "written beside the config"
        config[key] = path
        if key in decisions:
            decisions[key] = dataclasses.replace(decisions[key], value=path,
                                                 reason=f"{decisions[key].reason.split('; LlamaFactory')[0]}; {where}")
    return dataclasses.replace(result, config=config, decisions=decisions)


def same_file(key: str, chosen: Any, written: Any) -> bool:
    """Whether a file key's value in a written config is the file a rebuild names (placed elsewhere, same name)."""
    return key in FILE_KEYS and isinstance(chosen, str) and isinstance(written, str) \
        and Path(written).name == Path(chosen).name


# --- a sweep's runs share their tokenized data ---------------------------------------------------------

_DATA_KEYS = ("model_name_or_path", "dataset", "dataset_dir", "eval_dataset", "template", "cutoff_len", "val_size",
              "max_samples", "packing", "neat_packing", "train_on_prompt", "mask_history", "stage", "seed",
              "default_system", "tool_format", "enable_thinking", "image_max_pixels", "image_min_pixels",
              "video_max_pixels", "video_fps", "video_maxlen")


def tokenized(ctx: Context) -> None:
    """R-MULTI-KEYS: a sweep's runs on large data share one tokenized copy per data setting (LlamaFactory tokenizes
    into tokenized_path the first time, and loads it after that, ignoring the data keys: so the path is keyed by them)."""
    root = ctx.options.tokenize_into
    threshold = int(rules.rule("R-MULTI-KEYS").table("tokenize_once_from_rows"))
    if root is None or ctx.samples is None or ctx.samples < threshold or "tokenized_path" in ctx.fixed:
        return
    data = {key: ctx.config.get(key) for key in _DATA_KEYS if key in ctx.config}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
    ctx.choose("tokenized_path", f"{root}/tokenized-{digest}", "R-MULTI-KEYS",
               f"N = {ctx.samples:,} rows: the sweep's runs with the same data keys share one tokenized copy (the first "
               "run to start writes it; lfgen run starts the others once it is written, and they load it)")
