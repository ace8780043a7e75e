"""The state of one build: every key's value and the ``Decision`` behind it, and the precedence.

Precedence, highest first: the user's options (rule ``USER``), a base file's values (``FILE``),
the rules, the preset and the shared training block. A rule calls ``Context.choose``; a higher
source that fixed the key keeps it, and the decision names the rule it overrode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lfgen.builder.options import OPTION_KEYS, BuildOptions
from lfgen.catalogs import rules
from lfgen.catalogs.gpus import Hardware
from lfgen.catalogs.presets import Preset
from lfgen.errors import InputError
from lfgen.numbers import fmt

EXPLICIT_KEYS = ("output_dir", "report_to", "logging_steps", "save_steps", "plot_loss")



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
    lengths: Any = None  # lfgen.builder.data_lengths.Lengths of the training data, when measured
    seq_len: int | None = None  # the sequence length the memory estimate used (R-DATA-CUTOFF)
    headroom: float | None = None  # the share of GPU memory kept free (R-HW-HEADROOM or --headroom)
    shape: Any = None  # lfgen.builder.shapes.Shape: the stage x method this config trains
    fit: Any = None  # lfgen.models.Fit: the micro-batch that fits, or the options that would (with a GPU and model)
    files: dict[str, str] = field(default_factory=dict)  # name -> text: files the config points at, written beside it
    fit_steps: list[Any] = field(default_factory=list)  # R-HW-FIT's steps (auto), in order
    cpu: bool = False  # sized for a CPU run (R-HW-CPU)

    @property
    def skipped(self) -> dict[str, str]:
        """Rules whose premise does not hold for this shape, with why (explain lists them once)."""
        return self.shape.skipped if self.shape is not None else {}



def same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b



class Context:
    """The state of one build; rules call ``choose`` and ``warn``."""

    def __init__(self, base: str, options: BuildOptions, preset: Preset | None, file_values: dict[str, Any],
                 file_source: str | None):
        self.base, self.options, self.preset = base, options, preset
        self.file_source = file_source
        self.file_keys = frozenset(file_values)  # what the base file itself sets (a rule the user asked may replace it)
        self.config: dict[str, Any] = {}
        self.decisions: dict[str, Decision] = {}
        self.warnings: list[str] = []
        self.not_applied: list[Decision] = []
        self.samples: int | None = None
        self.samples_note = ""
        self.hardware: Hardware | None = None
        self._model_spec: Any = False  # not looked up yet; then lfgen.models.ModelSpec, or None if unknown
        self.estimate: Any = None  # lfgen.builder.estimates.Estimate, with a GPU
        self.fit: Any = None  # lfgen.models.Fit, with a GPU
        self.no_estimate = ""  # why lfgen cannot estimate this config's memory (estimates.cannot_estimate)
        self.lengths: Any = None  # lfgen.builder.data_lengths.Lengths of the training data, when measured
        self.seq_len: int | None = None  # the sequence length the memory estimate uses (R-DATA-CUTOFF)
        self.read_data = True  # False: rebuilding a file from its recipe, with the sizes and lengths it recorded
        self.shape: Any = None  # lfgen.builder.shapes.Shape, resolved by the first step (shape_rules.shape)
        self.replaced: set[str] = set()  # skeleton keys the shape decides instead (learning_rate, stage, ...)
        self.rate: Any = None  # lfgen.builder.shapes.Rate: the learning rate the shape's rule gives
        self.cpu = False  # the CPU target (R-HW-CPU): --gpu cpu, or no GPU here and none named
        self.detected: Any = None  # lfgen.catalogs.machine.Target, when the hardware was looked up here
        self.files: dict[str, str] = {}  # files the config points at by name (a DeepSpeed JSON), written beside it
        self.zero_tries: list[Any] = []  # (ZeRO stage, lfgen.models.Fit) tried on several GPUs (R-MULTI-DS)
        self.fit_steps: list[Any] = []  # the R-HW-FIT steps auto took to fit (lfgen.builder.fit_rules.Taken)
        # key -> (value, rule, where): the user's options win over the file's values.
        self.fixed: dict[str, tuple[Any, str, str]] = {k: (v, "FILE", f"set in {file_source}")
                                                      for k, v in file_values.items()}
        for name, key in OPTION_KEYS.items():
            value = getattr(options, name)
            if value is not None:
                value = ",".join(value) if name == "dataset" else value
                self.fixed[key] = (value, "USER", f"you set it (--{name.replace('_', '-')})")
        for key, value in options.set.items():
            if key in self.fixed and self.fixed[key][1] == "USER" and not same(self.fixed[key][0], value):
                raise InputError(f"--set {key}={value}: conflicts with {self.fixed[key][2].split('(')[-1][:-1]} "
                                 f"= {self.fixed[key][0]}; give the value once")
            self.fixed[key] = (value, "USER", f"you set it (--set {key}=...)")

    @property
    def model_spec(self) -> Any:
        """The model's architecture, looked up on first use (LF-MODEL): most builds of a preset with
        target `all` and no GPU never need it, and looking it up loads lfgen.models."""
        if self._model_spec is False:
            from lfgen.builder.model import model_spec

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
    def headroom(self) -> float:
        """The share of GPU memory kept free: --headroom PCT, else R-HW-HEADROOM's."""
        return rules.headroom(self.options.headroom)

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
            if not same(old, value):
                reason = f"{reason} (replaces the file's {fmt(old)}: you asked with {asked})"
        if key in self.fixed:
            fixed_value, fixed_rule, where = self.fixed[key]
            if fixed_rule == "FILE" and same(fixed_value, value):
                decision = Decision(key=key, value=fixed_value, rule=rule_id, reason=f"{reason} (as in the file)",
                                    source=source, alternative=alternative)
            else:
                # A rule that fixes a key before the others run (R-HW-FIT's steps) cites its own source.
                cited = where if fixed_rule in ("USER", "FILE") else rules.rule(fixed_rule).source
                how = f"the same as {rule_id}: {reason}" if same(fixed_value, value) else \
                    f"overrides {rule_id}, which gives {fmt(value)}: {reason}"
                decision = Decision(key=key, value=fixed_value, rule=fixed_rule, source=cited, reason=f"{where}; {how}")
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


def choose_key(ctx: Context, key: str, value: Any, rule_id: str, reason: str) -> None:
    """Choose a shape's key; a base file that leaves it at LlamaFactory's own default gets no suggestion."""
    if ctx.from_file_only and key not in ctx.fixed:
        from lfgen.catalogs.llamafactory import snapshot

        spec = snapshot().keys.get(key)
        if spec is not None and same(spec.default, value):
            return
    ctx.choose(key, value, rule_id, reason)
