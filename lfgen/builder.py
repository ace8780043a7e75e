"""Building a LlamaFactory config: a base (preset or file), the rules, and the user's values.

Precedence, highest first: the user's options (``--rank``, ``--set k=v``: rule ``USER``),
the values of a base file (rule ``FILE``), the rules (``R-...``), the preset, and the
shared training block. Every key written carries a ``Decision`` naming the rule and a
one-line reason; a rule overridden by a higher source is named in the reason.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lfgen import datasets, rules
from lfgen.errors import InputError, ProblemsFound
from lfgen.hardware import Gpu, Hardware, find_gpu, gpu_with_memory
from lfgen.presets import Preset, get_preset, training_block
from lfgen.resources import load_data

# Option name -> the LlamaFactory key it sets.
OPTION_KEYS = {
    "model": "model_name_or_path", "template": "template", "rank": "lora_rank", "alpha": "lora_alpha",
    "dropout": "lora_dropout", "target": "lora_target", "dataset": "dataset", "dataset_dir": "dataset_dir",
    "cutoff_len": "cutoff_len", "lr": "learning_rate", "epochs": "num_train_epochs", "output_dir": "output_dir",
}
# Keys lfgen always writes, even on top of a base file (LF-EXPLICIT).
EXPLICIT_KEYS = ("output_dir", "report_to", "logging_steps", "save_steps", "plot_loss")
_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


class BuildOptions(BaseModel):
    """What a user can ask for; field names are the CLI options (``--gpu-mem`` is ``gpu_mem``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1)
    template: str | None = Field(default=None, min_length=1)
    rank: int | None = Field(default=None, gt=0)
    alpha: int | None = Field(default=None, gt=0)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    target: str | None = Field(default=None, min_length=1)
    dataset: list[str] | None = Field(default=None, min_length=1)
    dataset_dir: str | None = Field(default=None, min_length=1)
    samples: int | None = Field(default=None, gt=0)
    cutoff_len: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    output_dir: str | None = Field(default=None, min_length=1)
    precision: str | None = Field(default=None, pattern="^(bf16|fp16|fp32)$")
    gpu: str | None = Field(default=None, min_length=1)
    gpu_mem: float | None = Field(default=None, gt=0)
    num_gpus: int = Field(default=1, gt=0)
    set: dict[str, Any] = {}

    @classmethod
    def parse(cls, **values: Any) -> BuildOptions:
        """Validate options; errors name the CLI option, the value and what is allowed."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                option = "--" + str(err["loc"][0]).replace("_", "-")
                message = err["msg"].replace("Input should be", "must be")
                lines.append(f"{option}: {message} (got {err['input']!r})")
            raise InputError("; ".join(lines)) from None


@dataclass(frozen=True)
class Decision:
    """Why one key has its value."""

    key: str
    value: Any
    rule: str
    reason: str
    source: str
    alternative: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Build:
    """A built config with the decision behind every key and the warnings found on the way."""

    base: str
    options: BuildOptions
    config: dict[str, Any]
    decisions: dict[str, Decision]
    warnings: list[str]
    samples: int | None
    samples_note: str
    hardware: Hardware | None
    estimate: Any
    preset: Preset | None
    # For a base file: what the rules would add that the file does not have (explain shows them).
    not_applied: list[Decision] = field(default_factory=list)


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars the way LlamaFactory's loader reads them."""
    from lfgen.lf_catalog import snapshot
    from lfgen.yamlio import loads

    catalog = snapshot()
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set: {item!r} is not key=value; write it as --set key=value (e.g. --set seed=7)")
        catalog.check_key(key)
        try:
            value = loads(raw) if raw.strip() else ""
        except Exception:  # noqa: BLE001 - any YAML error means: take the text as it is
            value = raw
        if isinstance(value, (dict, list)) and key not in ("report_to",):
            value = raw
        parsed[key] = value
    return parsed


def resolve_target(value: str, model: Any = None) -> tuple[str, str, tuple[str, ...]]:
    """R-TARGET: an abstract set (qv, attn, mlp, all) or module names -> (lora_target, how, notes).

    With a known *model* the sets map to its real module names (q_proj on Llama, query_key_value on
    GPT-NeoX, qkv_proj on Phi-3) and explicit names are checked against it; without one the sets are
    written as Llama/Qwen names.
    """
    names = [n.strip() for n in value.split(",")]
    if not names or any(not _MODULE_NAME.match(n) for n in names):
        raise InputError(f"--target: {value!r} is not a module list; use qv, attn, mlp, all or names like "
                         "q_proj,v_proj")
    if value == "all":  # LlamaFactory's own `all` is right on every architecture
        return "all", "'all' = every linear layer (LlamaFactory's own `all`)", ()
    model = model() if callable(model) else model
    if model is not None:
        from lfgen.estimates import resolve_target as on_model

        written, real, notes = on_model(model, value)
        return written, f"'{value}' = {', '.join(real)} on {model}", notes
    sets = rules.rule("R-TARGET").table("sets")
    if value in sets:
        return sets[value], f"'{value}' = {sets[value]}", ()
    return ",".join(names), "module names as given", ()


def _is_file_base(base: str) -> bool:
    return base.endswith((".yaml", ".yml", ".json")) or Path(base).is_file()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


class _Context:
    """The state of one build; rules call ``choose`` and ``warn``."""

    def __init__(self, base: str, options: BuildOptions, preset: Preset | None, file_values: dict[str, Any],
                 file_source: str | None):
        self.base, self.options, self.preset = base, options, preset
        self.file_source = file_source
        self.config: dict[str, Any] = {}
        self.decisions: dict[str, Decision] = {}
        self.warnings: list[str] = []
        self.not_applied: list[Decision] = []
        self.samples: int | None = None
        self.samples_note = ""
        self.hardware: Hardware | None = None
        self._model_spec: Any = False  # not looked up yet; then lfgen.models.ModelSpec, or None if unknown
        self.estimate: Any = None  # lfgen.estimates.Estimate, with a GPU
        self.fit: Any = None  # lfgen.models.Fit, with a GPU
        # key -> (value, rule, where): the user's options win over the file's values.
        self.fixed: dict[str, tuple[Any, str, str]] = {k: (v, "FILE", f"set in {file_source}")
                                                      for k, v in file_values.items()}
        for name, key in OPTION_KEYS.items():
            value = getattr(options, name)
            if value is not None:
                value = ",".join(value) if name == "dataset" else value
                self.fixed[key] = (value, "USER", f"you set it (--{name.replace('_', '-')})")
        for key, value in options.set.items():
            if key in self.fixed and self.fixed[key][1] == "USER" and not _same(self.fixed[key][0], value):
                raise InputError(f"--set {key}={value}: conflicts with {self.fixed[key][2].split('(')[-1][:-1]} "
                                 f"= {self.fixed[key][0]}; give the value once")
            self.fixed[key] = (value, "USER", f"you set it (--set {key}=...)")

    @property
    def model_spec(self) -> Any:
        """The model's architecture, looked up on first use (LF-MODEL): most builds of a preset with
        target `all` and no GPU never need it, and looking it up loads lfgen.models."""
        if self._model_spec is False:
            from lfgen.estimates import model_spec

            model = str(self.get("model_name_or_path", ""))
            self._model_spec, why = model_spec(model, required=False)
            if self._model_spec is None:
                self.warn("LF-MODEL", f"{why.removeprefix('--model ')}; without its architecture lfgen writes "
                                      "Llama/Qwen module names and makes no memory estimate")
        return self._model_spec

    @property
    def model_name(self) -> str | None:
        return str(self.get("model_name_or_path")) if self.model_spec is not None else None

    @property
    def from_file_only(self) -> bool:
        """A base file is the truth: rules give opinions but add no keys the file lacks."""
        return self.file_source is not None

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.config:
            return self.config[key]
        return self.fixed[key][0] if key in self.fixed else default

    def choose(self, key: str, value: Any, rule_id: str, reason: str, alternative: str | None = None,
               source: str | None = None, asked: str | None = None) -> None:
        """Set *key* by a rule, unless a higher source fixed it. *asked*: the option that asked for this
        rule (``--gpu``); such a rule also replaces a base file's value."""
        source = source or rules.rule(rule_id).source
        if asked and key in self.fixed and self.fixed[key][1] == "FILE":
            old = self.fixed.pop(key)[0]
            if not _same(old, value):
                reason = f"{reason} (replaces the file's {_fmt(old)}: you asked with {asked})"
        if key in self.fixed:
            fixed_value, fixed_rule, where = self.fixed[key]
            if fixed_rule == "FILE" and _same(fixed_value, value):
                decision = Decision(key=key, value=fixed_value, rule=rule_id, reason=f"{reason} (as in the file)",
                                    source=source, alternative=alternative)
            elif _same(fixed_value, value):
                decision = Decision(key=key, value=fixed_value, rule=fixed_rule, source=where,
                                    reason=f"{where}; the same as {rule_id}: {reason}")
            else:
                decision = Decision(key=key, value=fixed_value, rule=fixed_rule, source=where,
                                    reason=f"{where}; overrides {rule_id}, which gives {_fmt(value)}: {reason}")
            self.config[key] = fixed_value
            self.decisions[key] = decision
            return
        decision = Decision(key=key, value=value, rule=rule_id, reason=reason, source=source, alternative=alternative)
        if self.from_file_only and key not in EXPLICIT_KEYS and not asked:
            self.not_applied.append(decision)
            return
        self.config[key] = value
        self.decisions[key] = decision

    def warn(self, rule_id: str, message: str) -> None:
        line = f"{rule_id}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- the steps, in order -------------------------------------------------------------------------


def _skeleton(ctx: _Context) -> None:
    block = training_block()
    for key, choice in {**block.values, **block.defaults}.items():
        ctx.choose(key, choice.value, choice.rule, choice.reason)


def _lora(ctx: _Context) -> None:
    preset = ctx.preset
    if preset is None:
        return
    source = f"preset {preset.name}: {preset.source}"
    ctx.choose("lora_rank", preset.lora.rank, "PRESET", f"the {preset.name} preset's rank", source=source)
    target, how, notes = resolve_target(preset.lora.target, lambda: ctx.model_name)
    ctx.choose("lora_target", target, "R-TARGET", f"the {preset.name} preset targets {how}", source=source)
    for note in notes:
        ctx.warn("R-TARGET", note)
    ctx.choose("lora_dropout", preset.lora.dropout, "R-DATA-DROPOUT" if "lora_dropout" not in preset.pinned
               else "PRESET", f"the {preset.name} preset's dropout" + (" (data size not known)"
                                                                       if "lora_dropout" not in preset.pinned else ""),
               alternative=_dropout_alternative(), source=source)
    for key, value in preset.unsupported.items():
        ctx.warn("R-BIAS", f"the {preset.name} preset's seed asks for {key} {value}; LlamaFactory has no LoRA "
                           f"{key} option (its LoraConfig uses bias none), so nothing is written for it")


def _dropout_alternative() -> str:
    alt = rules.rule("R-DATA-DROPOUT").table("alternative")
    return f"lora_dropout {alt['value']} ({alt['source']}); pass --dropout {alt['value']}"


def _user_target(ctx: _Context) -> None:
    """--target takes the abstract sets too; store the resolved names as the user's value."""
    if ctx.options.target is not None:
        target, how, notes = resolve_target(ctx.options.target, lambda: ctx.model_name)
        ctx.fixed["lora_target"] = (target, "USER", f"you set it (--target {ctx.options.target}: {how})")
        for note in notes:
            ctx.warn("R-TARGET", note)


def _data_size(ctx: _Context) -> None:
    """How many training rows: --samples, else counted from dataset_info.json."""
    if ctx.options.samples is not None:
        ctx.samples, ctx.samples_note = ctx.options.samples, "you set it (--samples)"
        return
    names = datasets.split_names(ctx.get("dataset"))
    dataset_dir = ctx.get("dataset_dir", "data")
    explicit_dir = ctx.options.dataset_dir is not None
    info_path = Path(dataset_dir) / datasets.INFO_FILE
    if not explicit_dir and not info_path.is_file():
        ctx.warn("R-DATA-RANK", f"no {info_path} here, so the data size is unknown; pass --samples N or "
                                "--dataset-dir DIR to size rank, dropout, epochs and warmup for your data")
        return
    try:
        info = datasets.load_info(dataset_dir)
        problems = datasets.unregistered(names, info, dataset_dir)
        if problems:
            raise InputError(problems[0])
        max_samples = ctx.get("max_samples")
        sizes = [datasets.count_rows(n, info[n], dataset_dir, max_samples) for n in names]
    except InputError as exc:
        if explicit_dir or ctx.options.dataset is not None:  # the user named the data: a wrong name is an error
            raise
        ctx.warn("R-DATA-RANK", f"the data size is unknown: {exc}")
        return
    unknown = [s.note for s in sizes if s.rows is None]
    if unknown:
        ctx.warn("R-DATA-RANK", "; ".join(unknown))
        return
    ctx.samples = sum(s.rows for s in sizes if s.rows is not None)
    ctx.samples_note = "counted: " + "; ".join(s.note for s in sizes)


def _data_rules(ctx: _Context) -> None:
    n = ctx.samples
    preset = ctx.preset
    pinned = set(preset.pinned) if preset else {"lora_rank", "lora_alpha", "lora_target", "lora_dropout"}
    if n is None:
        return
    count = f"N = {n:,} samples"
    asked = "--samples" if ctx.options.samples else "--dataset-dir" if ctx.options.dataset_dir else None
    rank_band = rules.band("R-DATA-RANK", n)
    low, high = rank_band["range"]
    if preset is not None and "lora_rank" not in pinned:
        ctx.choose("lora_rank", rank_band["value"], "R-DATA-RANK",
                   f"{count}: seed 002's band is rank {low}-{high}; lfgen takes the top",
                   alternative=rules.rule("R-DATA-RANK").table("alternative"))
    small = rules.rule("R-DATA-RANK").table("small_data")
    rank = ctx.get("lora_rank")
    if isinstance(rank, int) and not low <= rank <= high:
        ctx.warn("R-DATA-RANK", f"rank {rank} is outside seed 002's band {low}-{high} for {count} "
                                f"({'risk of overfitting' if rank > high else 'may underfit'}); your call")
    if isinstance(rank, int) and n <= small["upto"] and rank > small["max_rank"]:
        ctx.warn("R-DATA-RANK", f"rank {rank} with under 1,000 samples: seed 003 says never above "
                                f"{small['max_rank']} (overfitting)")
    dropout = rules.band("R-DATA-DROPOUT", n)["value"]
    if "lora_dropout" in pinned:
        if not _same(ctx.get("lora_dropout"), dropout):
            ctx.warn("R-DATA-DROPOUT", f"the {preset.name} preset keeps dropout {ctx.get('lora_dropout')}; "
                                       f"seed 002's band for {count} is {dropout}")
    else:
        ctx.choose("lora_dropout", dropout, "R-DATA-DROPOUT", f"{count}: seed 002's band gives {dropout}",
                   alternative=_dropout_alternative(), asked=asked)
    epochs = rules.band("R-DATA-EPOCHS", n)
    ctx.choose("num_train_epochs", epochs["value"], "R-DATA-EPOCHS",
               f"{count}: seed 002's band is {epochs['range'][0]}-{epochs['range'][1]} epochs; lfgen takes the low "
               "end (stop when eval loss stops falling)", asked=asked)
    warmup = rules.band("R-DATA-WARMUP", n)["value"]
    ctx.choose("warmup_ratio", warmup, "R-DATA-WARMUP", f"{count}: warmup {warmup} for this data size", asked=asked)
    decay = rules.band("R-DATA-WD", n)["value"]
    ctx.choose("weight_decay", decay, "R-DATA-WD", f"{count}: weight decay {decay}", asked=asked)


def _alpha(ctx: _Context) -> None:
    """R-ALPHA: alpha keeps the base's alpha/rank ratio (the preset's, or the file's), 2 by default."""
    rank = ctx.get("lora_rank")
    if not isinstance(rank, int):
        return
    if ctx.preset is not None:
        ratio, whose = ctx.preset.lora.alpha_ratio, f"the {ctx.preset.name} preset's ratio"
    else:
        file_rank = ctx.fixed.get("lora_rank", (None, "FILE"))
        file_alpha = ctx.fixed.get("lora_alpha", (None, "FILE"))
        if file_rank[1] == "FILE" and isinstance(file_rank[0], int) and isinstance(file_alpha[0], int):
            ratio, whose = file_alpha[0] / file_rank[0], "the file's ratio"
        else:
            ratio, whose = 2.0, "the default ratio"
    ctx.choose("lora_alpha", round(ratio * rank), "R-ALPHA", f"alpha = {ratio:g} x rank {rank} ({whose})",
               asked="--rank" if ctx.options.rank is not None and ctx.options.alpha is None else None)


def _hardware(ctx: _Context) -> None:
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
    gpus = f" x {opts.num_gpus} GPUs" if opts.num_gpus > 1 else ""
    seed_way = f"seed 002's {tier} tier: {micro} x {accumulation}{gpus}"
    if ctx.model_spec is not None:
        _fit_to_gpu(ctx, gpu, asked, seed_way)
        return
    _headroom(ctx, gpu)
    effective = micro * accumulation * opts.num_gpus
    ctx.choose("per_device_train_batch_size", micro, "R-HW-BATCH",
               f"{gpu.name} ({gpu.memory_gb:g} GB) is in the {tier} tier: micro-batch {micro}", asked=asked)
    ctx.choose("gradient_accumulation_steps", accumulation, "R-HW-BATCH",
               f"{micro} x {accumulation}{gpus} = effective batch {effective} (seed 002 keeps it at 32-64)",
               asked=asked)


def _fit_to_gpu(ctx: _Context, gpu: Gpu, asked: str, seed_way: str) -> None:
    """R-HW-HEADROOM with the estimator: the largest micro-batch that leaves the headroom free."""
    from lfgen.estimates import fit

    headroom = rules.rule("R-HW-HEADROOM").table("headroom")
    target, _ = rules.effective_batch_range()
    model = ctx.model_name
    result = fit(model, {**ctx.config, **{k: v[0] for k, v in ctx.fixed.items() if k not in ctx.config}},
                 gpu.name, gpu.memory_gb, ctx.options.num_gpus, headroom, target)
    ctx.fit = result
    if not result.fits:
        options = "; ".join(f"{o.description} (~{o.estimate.total:.1f} GiB)" for o in result.options) or \
            "none of lfgen's single changes"
        ctx.warn("R-HW-HEADROOM", f"{model} does not fit on {gpu.name} ({gpu.memory_gb:g} GB, keeping {headroom:.0%} "
                                  f"free) even at micro-batch 1 (estimate {result.estimate.total:.1f} GiB); what "
                                  f"would: {options}")
        micro, accumulation = 1, max(1, -(-target // ctx.options.num_gpus))
        ctx.choose("per_device_train_batch_size", micro, "R-HW-BATCH", "micro-batch 1: nothing larger can fit",
                   asked=asked, alternative=seed_way)
        ctx.choose("gradient_accumulation_steps", accumulation, "R-HW-BATCH",
                   f"1 x {accumulation} keeps the effective batch", asked=asked)
        return
    budget = gpu.memory_gb * (1 - headroom)
    ctx.choose("per_device_train_batch_size", result.micro_batch, "R-HW-HEADROOM",
               f"the largest micro-batch whose estimated peak ({result.estimate.total:.1f} GiB for {model}) stays "
               f"under {budget:.1f} of {gpu.name}'s {gpu.memory_gb:g} GB ({headroom:.0%} left free)", asked=asked,
               alternative=seed_way)
    gpus = f" x {ctx.options.num_gpus} GPUs" if ctx.options.num_gpus > 1 else ""
    ctx.choose("gradient_accumulation_steps", result.gradient_accumulation_steps, "R-HW-BATCH",
               f"{result.micro_batch} x {result.gradient_accumulation_steps}{gpus} = effective batch "
               f"{result.effective_batch} (seed 002 keeps it at 32-64)", asked=asked)


def _estimate(ctx: _Context) -> None:
    from lfgen.estimates import estimate

    gpu = ctx.hardware.gpu
    ctx.estimate = estimate(ctx.model_name, ctx.config, gpu.name, gpu.memory_gb, ctx.options.num_gpus,
                            rules.rule("R-HW-HEADROOM").table("headroom"))


def _headroom(ctx: _Context, gpu: Gpu) -> None:
    headroom = rules.rule("R-HW-HEADROOM").table("headroom")
    if ctx.model_spec is not None:
        return  # the estimator sized the batch for this very model; the seed's 7B figure adds nothing
    figure = re.search(r"~(\d+)\s*GB", ctx.preset.seed_figures.vram) if ctx.preset else None
    if figure and float(figure.group(1)) > gpu.memory_gb * (1 - headroom):
        ctx.warn("R-HW-HEADROOM", f"seed 002 puts the {ctx.preset.name} preset at ~{figure.group(1)} GB for a 7B "
                                  f"model, which leaves less than {headroom:.0%} of {gpu.name}'s {gpu.memory_gb:g} GB "
                                  "free; consider a lighter preset or quantization_bit 4")


def _user_precision(ctx: _Context) -> None:
    wanted = ctx.options.precision
    if wanted is not None:
        for key in ("bf16", "fp16"):
            ctx.fixed[key] = (wanted == key, "USER", f"you set it (--precision {wanted})")


def _precision(ctx: _Context, gpu: Gpu, asked: str) -> None:
    if gpu.bf16 is None:
        ctx.warn("R-HW-PRECISION", f"{gpu.name}: bf16 support unknown with --gpu-mem; keeping bf16 "
                                   f"{ctx.get('bf16')} (pass --gpu NAME to check)")
    elif gpu.bf16:
        ctx.choose("bf16", True, "R-HW-PRECISION", f"{gpu.name} ({gpu.arch}) supports bf16 mixed precision",
                   asked=asked)
    else:
        ctx.choose("bf16", False, "R-HW-PRECISION",
                   f"{gpu.name} ({gpu.arch}) has no bf16: train in fp32 (seed 001: fp16 LoRA went NaN)", asked=asked)


def _template(ctx: _Context) -> None:
    model = str(ctx.get("model_name_or_path", ""))
    families = load_data("templates.yaml")
    for family in families["families"]:
        if re.search(family["pattern"], model, re.IGNORECASE):
            ctx.choose("template", family["template"], "LF-TEMPLATE",
                       f"{model} is a {family['template']}-template model")
            return
    ctx.choose("template", families["fallback"], "LF-TEMPLATE",
               f"no family known for {model}; LlamaFactory's generic template")
    if "template" not in ctx.fixed:
        ctx.warn("LF-TEMPLATE", f"no chat template known for {model!r}; wrote template: default, pass --template "
                                "NAME (see LlamaFactory's supported models table)")


def _output(ctx: _Context) -> None:
    model_name = Path(str(ctx.get("model_name_or_path", "model")).rstrip("/")).name.lower()
    tag = ctx.preset.name if ctx.preset else Path(ctx.base).stem
    output_dir = f"outputs/{model_name}-{tag}-r{ctx.get('lora_rank', 8)}"
    ctx.choose("output_dir", output_dir, "LF-DEFAULT", "a fresh folder per run (LlamaFactory resumes or refuses "
                                                       "in a used one)")
    micro = ctx.get("per_device_train_batch_size")
    if micro is not None:
        ctx.choose("per_device_eval_batch_size", micro, "R-HW-BATCH",
                   "evaluate with the training micro-batch (the default 8 can run out of memory)")


def _user_rest(ctx: _Context) -> None:
    """Every fixed key no rule touched: the user's --set keys and the rest of a base file."""
    for key, (value, rule_id, where) in ctx.fixed.items():
        if key not in ctx.decisions:
            ctx.config[key] = value
            ctx.decisions[key] = Decision(key=key, value=value, rule=rule_id, reason=where,
                                          source=where if rule_id == "USER" else ctx.file_source or "")


def _checks(ctx: _Context) -> None:
    cfg = ctx.config
    lr, rank, alpha = cfg.get("learning_rate"), cfg.get("lora_rank"), cfg.get("lora_alpha")
    low, high = rules.rule("R-LR").table("range")
    if isinstance(lr, (int, float)) and not low <= lr <= high:
        ctx.warn("R-LR", f"learning_rate {lr:g} is outside the LoRA range {low:g}-{high:g} (seed 001: 5e-6 too slow, "
                         "1e-3 oscillates)")
    if isinstance(rank, int) and isinstance(alpha, int) and alpha / rank > 2 and isinstance(lr, (int, float)) \
            and lr >= 2e-4:
        ctx.warn("R-LR", f"alpha/rank = {alpha / rank:g} with learning_rate {lr:g}: seed 004 says a higher alpha "
                         "may need a lower learning rate (try 1e-4)")
    target = str(cfg.get("lora_target", ""))
    if target and set(target.split(",")) <= {"o_proj", "down_proj"}:
        ctx.warn("R-TARGET", f"lora_target {target}: seed 003 says targeting only o_proj or down_proj usually "
                             "works poorly; add q_proj,v_proj or use all")
    micro, accumulation = cfg.get("per_device_train_batch_size"), cfg.get("gradient_accumulation_steps")
    if isinstance(micro, int) and isinstance(accumulation, int):
        effective = micro * accumulation * ctx.options.num_gpus
        lo, hi = rules.effective_batch_range()
        if not lo <= effective <= hi:
            ctx.warn("R-HW-BATCH", f"effective batch {micro} x {accumulation} x {ctx.options.num_gpus} GPU(s) = "
                                   f"{effective}; seed 002 keeps it at {lo}-{hi}")
    if cfg.get("fp16") is True:
        ctx.warn("R-HW-PRECISION", "fp16 is on: seed 001 saw LoRA training go NaN after the first batch in plain "
                                   "fp16 and fixed it with float32; prefer bf16 (or fp32 where bf16 is missing)")
    gpu = ctx.hardware.gpu if ctx.hardware else None
    if gpu is not None and gpu.bf16 is False and cfg.get("bf16") is True:
        ctx.warn("R-HW-PRECISION", f"bf16 is on but {gpu.name} has no bf16; set --precision fp32")
    if gpu is not None and gpu.fa2 is False and cfg.get("flash_attn") in ("fa2", "fa3"):
        ctx.warn("R-HW-FA", f"flash_attn {cfg['flash_attn']} on {gpu.name}, which does not support it")
    if ctx.from_file_only:
        for key in EXPLICIT_KEYS:
            if key in ctx.config and key not in ctx.fixed:
                ctx.warn("LF-EXPLICIT", f"the file does not set {key}; lfgen writes {key}: {ctx.config[key]} "
                                        "(LlamaFactory's default depends on the installed transformers)")


def build(base: str = "a800", options: BuildOptions | None = None, *, check_data: bool = True) -> Build:
    """Build one LlamaFactory train config from a preset name or a config file, plus options."""
    options = options or BuildOptions()
    preset: Preset | None = None
    file_values: dict[str, Any] = {}
    file_source = None
    if _is_file_base(base):
        from lfgen.yamlio import load_config

        file_values, file_source = load_config(base), base
    else:
        preset = get_preset(base)
    ctx = _Context(base, options, preset, file_values, file_source)
    _user_precision(ctx)
    _skeleton(ctx)
    _user_target(ctx)
    if check_data:
        _data_size(ctx)
    elif options.samples is not None:
        ctx.samples, ctx.samples_note = options.samples, "as recorded when the file was written"
    _lora(ctx)
    _data_rules(ctx)
    _alpha(ctx)
    _hardware(ctx)
    _template(ctx)
    _output(ctx)
    _user_rest(ctx)
    _checks(ctx)
    if ctx.model_spec is not None and ctx.hardware is not None:
        _estimate(ctx)
    # Rule values are tested against LlamaFactory's parser; only raw values from --set or a base
    # file need lfgen's schema (skipping it keeps `lfgen preset` inside its startup budget).
    if options.set or file_values:
        from lfgen.lf_catalog import snapshot
        from lfgen.schema import check

        problems = check(ctx.config, snapshot())
        if problems:
            raise ProblemsFound(problems)
    return Build(base=base, options=options, config=ctx.config, decisions=ctx.decisions, warnings=ctx.warnings,
                 samples=ctx.samples, samples_note=ctx.samples_note, hardware=ctx.hardware, estimate=ctx.estimate, preset=preset, not_applied=ctx.not_applied)
