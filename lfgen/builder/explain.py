"""``lfgen explain``: every value of a config, the rule that chose it and why."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder.context import Build, Decision, same
from lfgen.builder.kinds import Kind, classify
from lfgen.builder.multi_gpu import same_file
from lfgen.builder.options import BuildOptions
from lfgen.builder.steps import build, is_file_base
from lfgen.builder.recipe import read_recipe
from lfgen.errors import InputError
from lfgen.paths import config_root
from lfgen.yamlio import parse_config, read_text


@dataclass
class Explanation:
    """What ``lfgen explain`` reports; ``to_json`` is the documented ``--json`` shape."""

    source: str
    config: dict[str, Any]
    decisions: list[Decision]
    warnings: list[str]
    samples: int | None = None
    samples_note: str = ""
    gpu: dict[str, Any] | None = None
    # Rules the file does not follow: values lfgen would add or choose differently.
    suggestions: list[Decision] = field(default_factory=list)
    estimate: Any = None  # lfgen.builder.estimates.Estimate when the model's architecture is known
    kind: Kind | None = None
    problems: list[str] = field(default_factory=list)  # what lfgen validate reports on the file's values
    estimate_note: str = ""  # why there is no estimate, when lfgen cannot make one
    seq_len: int | None = None  # the data's longest sample the estimate uses (R-DATA-CUTOFF)
    headroom: float | None = None  # the share of GPU memory kept free
    lengths: Any = None  # the data's measured lengths (lfgen.builder.data_lengths.Lengths), for the time estimate
    run_cost: Any = None  # lfgen.builder.timing.RunCost: time and cost, when a model and GPU are known
    shape: Any = None  # lfgen.builder.shapes.Shape of a training config
    fit_steps: list[Any] = field(default_factory=list)  # R-HW-FIT's steps auto took (lfgen.builder.fit_rules.Taken)
    cpu: bool = False  # sized for a CPU run (R-HW-CPU)

    def shape_json(self) -> dict[str, Any] | None:
        """The run's shape and the rules whose premise does not hold for it (said once, here)."""
        if self.shape is None:
            return None
        found = self.shape
        return {"name": found.name, "label": found.label, "stage": found.stage_name, "method": found.method_name,
                "rules_not_applied": [{"rule": rule_id, "why": why} for rule_id, why in found.skipped.items()]}

    def to_json(self) -> dict[str, Any]:
        extra = self.estimate.to_json() if self.estimate is not None else {}
        if extra and self.gpu is not None:
            extra["gpu"] = {**self.gpu, "memory_gib": self.gpu["memory_gb"]}
        if extra:  # time and cost ride on the model estimate (docs/estimates.md)
            cost = self.run_cost
            extra.update(time=cost.time if cost else None, cost=cost.cost if cost else None,
                         time_basis=cost.basis if cost else None, time_note=cost.note if cost else "")
        return {**extra,
            "source": self.source,
            "kind": self.kind.to_json() if self.kind else None,
            "shape": self.shape_json(),
            "problems": self.problems,
            "estimate_note": self.estimate_note,
            "config": self.config,
            "decisions": [d.to_json() for d in self.decisions],
            "warnings": self.warnings,
            "suggestions": [d.to_json() for d in self.suggestions],
            "samples": self.samples,
            "gpu": extra.get("gpu", self.gpu),
            "target": "cpu" if self.cpu else "gpu" if self.gpu else None,
            "fit_steps": [{"key": t.key, "from": t.before, "to": t.value, "needed_gib": round(t.needed_gib, 2),
                           "reason": t.reason} for t in self.fit_steps],
        }


def _gpu(result: Build) -> dict[str, Any] | None:
    if result.hardware is None:
        return None
    gpu = result.hardware.gpu
    return {"name": gpu.name, "memory_gb": gpu.memory_gb, "num_gpus": result.hardware.num_gpus, "bf16": gpu.bf16,
            "fa2": gpu.fa2, "headroom": result.headroom}


def _from_build(source: str, result: Build, keys: list[str] | None = None) -> Explanation:
    keys = keys if keys is not None else list(result.config)
    return Explanation(source=source, config={k: result.config[k] for k in keys if k in result.config},
                       decisions=[result.decisions[k] for k in keys if k in result.decisions],
                       warnings=list(result.warnings), samples=result.samples, samples_note=result.samples_note,
                       gpu=_gpu(result), suggestions=list(result.not_applied), seq_len=result.seq_len,
                       headroom=result.headroom, lengths=result.lengths, shape=result.shape,
                       fit_steps=list(result.fit_steps), cpu=result.cpu)


def _explain_generated(path: str, text: str, options: BuildOptions) -> Explanation | None:
    """A file lfgen wrote: rebuild it from its recipe and tell lfgen's choices from hand edits."""
    recipe = read_recipe(text)
    if recipe is None or options.model_dump(exclude_defaults=True):
        return None
    from lfgen.builder.data_lengths import Lengths

    recorded = Lengths(**recipe.lengths) if recipe.lengths else None
    rebuilt = build(recipe.base, BuildOptions.parse(**{**recipe.options, "samples": recipe.samples}),
                    check_data=False, lengths=recorded)
    values = parse_config(text, path)
    decisions, warnings = [], list(rebuilt.warnings)
    for key, value in values.items():
        chosen = rebuilt.decisions.get(key)
        if chosen is not None and same_file(key, chosen.value, value):  # a file lfgen wrote beside the config
            decisions.append(dataclasses.replace(chosen, value=value))
        elif chosen is not None and same(chosen.value, value):
            decisions.append(chosen)
        elif chosen is not None:
            decisions.append(Decision(key=key, value=value, rule="FILE", source=path,
                                      reason=f"edited by hand; lfgen wrote {chosen.value!r} ({chosen.rule}: "
                                             f"{chosen.reason})"))
        else:
            decisions.append(Decision(key=key, value=value, rule="FILE", source=path, reason="added by hand"))
    for key in rebuilt.config:
        if key not in values:
            warnings.append(f"FILE: {key} was removed by hand; lfgen wrote {key}: {rebuilt.config[key]!r} "
                            f"({rebuilt.decisions[key].rule})")
    return Explanation(source=path, config=values, decisions=decisions, warnings=warnings, samples=rebuilt.samples,
                       samples_note=rebuilt.samples_note and "as recorded when the file was written",
                       gpu=_gpu(rebuilt), seq_len=rebuilt.seq_len, headroom=rebuilt.headroom,
                       lengths=rebuilt.lengths, shape=rebuilt.shape, fit_steps=list(rebuilt.fit_steps),
                       cpu=rebuilt.cpu)


def _explain_as_is(path: str, values: dict[str, Any], kind: Kind) -> Explanation:
    """A chat / export / predict config, or no LlamaFactory config at all: its keys as they are, no rules,
    no suggestions, no training estimate."""
    from lfgen.catalogs.llamafactory import snapshot

    catalog, decisions = snapshot(), []
    if kind.is_llamafactory:
        for key, value in values.items():
            spec = catalog.keys.get(key)
            default = f"; LlamaFactory's default: {spec.default!r}" if spec is not None else "; not a LlamaFactory key"
            decisions.append(Decision(key=key, value=value, rule="FILE", source=path,
                                      reason=f"set in {path}{default}"))
    return Explanation(source=path, config=values if kind.is_llamafactory else {}, decisions=decisions,
                       warnings=[], kind=kind)


def _schema_problems(values: dict[str, Any]) -> list[str]:
    from lfgen.builder.schema import check
    from lfgen.catalogs.llamafactory import snapshot

    return check(values, snapshot())


def explain(target: str, options: BuildOptions | None = None, price: float | None = None) -> Explanation:
    """Explain a config file (lfgen's or anyone's) or a preset built with *options*, with the model's
    target modules, trainable parameters and memory estimate when its architecture is known, and with a
    GPU the run's time and cost (*price*: USD per GPU-hour, else the user's or the default price).

    The file's kind (``lfgen.builder.kinds``) decides what is said: the rules and the estimate only for
    a training config."""
    options = options or BuildOptions()
    if price is not None:
        from lfgen.catalogs.prices import check_price

        check_price(price, "--price")  # checked before anything, estimate or not
    if not is_file_base(target):
        result = _from_build(f"preset {target}", build(target, options))
        result.kind = classify(result.config)
    elif (root := config_root(target)) is not None and root != Path.cwd().resolve():
        path = str(Path(target).resolve())
        with contextlib.chdir(root):  # its recipe (base, dataset_dir, model) is relative to the root it was made in
            result = explain(path, options, price)
        result.source = target
        return result
    else:
        text = read_text(target, "config file")
        values = parse_config(text, target)
        kind = classify(values)
        if not kind.is_training:
            return _explain_as_is(target, values, kind)
        result = _explain_generated(target, text, options)
        if result is None:
            built = build(target, options, check_schema=False)
            problems = _schema_problems(built.config)
            result = _from_build(target, built, list(values) + [k for k in built.config if k not in values])
            result.problems = problems
        result.kind = kind
    result.estimate, result.estimate_note = _estimate(result, options)
    if result.estimate is not None:
        result.run_cost = _time(result, options, price)
    return result


def _time(result: Explanation, options: BuildOptions, price: float | None):
    from lfgen.builder.timing import estimate_config_time
    from lfgen.catalogs.gpus import find_gpu

    gpu = None
    if result.gpu:
        try:
            gpu = find_gpu(result.gpu["name"])
        except InputError:  # a --gpu-mem card: no peak figures
            gpu = None
    return estimate_config_time(str(result.config.get("model_name_or_path")), result.config, gpu,
                                (result.gpu or {}).get("num_gpus", options.num_gpus), result.samples,
                                result.lengths, price)


def _estimate(result: Explanation, options: BuildOptions) -> tuple[Any, str]:
    from lfgen.builder.estimates import cannot_estimate, estimate, model_spec

    model = result.config.get("model_name_or_path")
    if not model:
        return None, ""
    spec, _ = model_spec(str(model), required=options.model is not None)  # --model X: X must be known
    if spec is None:
        return None, ""
    why = cannot_estimate(result.config)
    if why:
        return None, why
    from lfgen.catalogs.rules import headroom

    gpu = result.gpu or {}
    lengths = result.lengths
    found = (lengths.image_patches, lengths.image_tokens) if lengths is not None and \
        getattr(lengths, "image_max_pixels", None) else None
    return estimate(str(model), result.config, gpu.get("name"), gpu.get("memory_gb"),
                    gpu.get("num_gpus", options.num_gpus), result.headroom or headroom(options.headroom),
                    seq_len=result.seq_len, images=found), ""
