"""``lfgen validate``: every problem of every config file, found at once.

Four layers, each catching what the one before cannot:
1. the file itself (exists, YAML, a mapping);
2. lfgen's schema (types, choices, ranges; LlamaFactory's parser checks none of them);
3. names that must exist: keys (with did-you-mean), the chat template, the datasets in
   ``<dataset_dir>/dataset_info.json`` (from the root the config records, else the working directory; or
   ``--dataset-dir``);
4. LlamaFactory's own parser, in one subprocess for all files, when it is installed: the parser of the
   file's command (``get_train_args`` for train and predict, ``get_infer_args`` for chat and export,
   ``get_eval_args`` for eval), run from the current directory as ``llamafactory-cli`` would.

A file that is not a LlamaFactory config (a DeepSpeed or accelerate config, the v1 trainer's schema, a
token list: ``lfgen.builder.kinds``) is not checked: one note says what it is and what to do with it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder import datasets

from lfgen.builder import schema
from lfgen.builder.kinds import Kind, classify
from lfgen.errors import INSTALL_HINT, InputError, did_you_mean
from lfgen.catalogs.llamafactory import Catalog, find_python, probe, snapshot
from lfgen.yamlio import load_config

_UNUSED_KEYS = re.compile(r"Some keys are not used by the HfArgumentParser: \[(.*)\]")
_NO_DEEPSPEED = re.compile(r"PackageNotFoundError.*'deepspeed[^']*' distribution was not found")


@dataclass
class FileReport:
    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: Kind | None = None  # None when the file could not be read
    cannot_run_here: str = ""  # why this machine cannot train it (no GPU for bf16, fp16, 4-bit, DeepSpeed)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def checked(self) -> bool:
        """False for a file that is not a LlamaFactory config: validate says what it is and skips it."""
        return self.kind is None or self.kind.is_llamafactory

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "problems": self.problems, "notes": self.notes,
                "kind": self.kind.to_json() if self.kind else None, "checked": self.checked,
                "runs_here": not self.cannot_run_here, "cannot_run_here": self.cannot_run_here}


@dataclass
class Report:
    files: list[FileReport]
    llamafactory: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "llamafactory": self.llamafactory, "files": [f.to_json() for f in self.files]}


def _dataset_problems(config: dict[str, Any], root: Path | None = None,
                      dataset_dir: str | None = None) -> tuple[list[str], list[str]]:
    problems, notes, _ = _datasets(config, root, dataset_dir)
    return problems, notes


def _datasets(config: dict[str, Any], root: Path | None = None,
              dataset_dir: str | None = None) -> tuple[list[str], list[str], dict[str, Any] | None]:
    """Problems and notes of the config's dataset names, and its dataset_info.json when it could be read."""
    names = {key: datasets.split_names(config.get(key)) for key in ("dataset", "eval_dataset")}
    if not any(names.values()):
        return [], [], None
    dataset_dir = dataset_dir or str(config.get("dataset_dir") or "data")  # --dataset-dir wins
    if dataset_dir.startswith("REMOTE:") or dataset_dir == "ONLINE":
        return [], [f"dataset_dir {dataset_dir}: datasets on the hub are not checked offline"], None
    relative = not Path(dataset_dir).is_absolute()
    if relative and root is not None:  # lfgen run starts LlamaFactory in the config's recorded root
        dataset_dir = str(root / dataset_dir)
    try:
        info = datasets.load_info(dataset_dir)
    except InputError as exc:
        where = "" if not relative else (f" (relative to the config's root {root}, its lfgen-root: line)" if root
                                         else " (LlamaFactory resolves it from the current directory)")
        return [f"{exc}{where}"], [], None
    problems = []
    for key, found in names.items():
        problems += datasets.unregistered(found, info, dataset_dir, key)
    problems += _stage_problems(config, names, info, dataset_dir)
    return problems, [], info


def _stage_problems(config: dict[str, Any], names: dict[str, list[str]], info: dict[str, Any],
                    dataset_dir: str) -> list[str]:
    """R-STAGE-DATA: each registered dataset fits the config's stage (LlamaFactory checks only after loading the
    model). A predict config evaluates with the SFT processor whatever its stage says."""
    from lfgen.builder.data_kinds import fit_problem
    from lfgen.builder.shapes import of_config

    if config.get("do_predict") is True and config.get("do_train") is not True:
        return []
    found = of_config(config)
    return [problem for key, listed in names.items() for name in listed if name in info
            if (problem := fit_problem(name, info[name], found.stage_name, found.stage.data, dataset_dir, key))]


def _model_problems(config: dict[str, Any], root: Path | None = None) -> list[str]:
    """A local-looking model path that is not there; a template known to be wrong for the local model's
    architecture (config.json's model_type). Relative paths resolve from the config's recorded root (where
    lfgen run starts LlamaFactory), else from the current directory, as LlamaFactory resolves them."""
    import json

    from lfgen.builder.model import local_path, looks_local
    from lfgen.catalogs.templates import family_of, template_for, wrong_template

    model = config.get("model_name_or_path")
    if not isinstance(model, str) or not model:
        return []
    path = local_path(model)
    if root is not None and not path.is_absolute():
        path = root / path
    try:
        exists = path.exists()
    except OSError as exc:  # too long, no permission
        from lfgen.errors import short_path
        from lfgen.yamlio import path_problem

        return [f"model_name_or_path: {short_path(model)} cannot be read: {path_problem(exc)}"]
    if not exists:
        if not looks_local(model):
            return []  # a Hub id: not checked offline
        where = "" if Path(model).expanduser().is_absolute() else (
            f" (relative to the config's root {root}, its lfgen-root: line)" if root is not None
            else f" (relative to the current directory, {Path.cwd()})")
        return [f"model_name_or_path: {model} does not exist{where}; give the folder of a Hugging Face model "
                "or a Hub id such as Qwen/Qwen2.5-7B-Instruct"]
    if not path.is_dir():
        return [f"model_name_or_path: {model} is a file; give the model's folder (the one with config.json)"]
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError:
        return [f"model_name_or_path: {model} has no config.json, so it is not a Hugging Face model folder"]
    except (OSError, ValueError, AttributeError):
        return []  # an unreadable config.json is LlamaFactory's to report
    template = config.get("template")
    if not isinstance(template, str) or not isinstance(model_type, str):
        return []
    from lfgen.models import vlm

    if vlm.composite(model_type) is not None:
        return []  # a vision-language model's templates are lfgen.builder.vlm_checks' business
    family = wrong_template(template, model_type)
    if family is None:
        return []
    suggestion = next((t for t in (template_for(model), template_for(model_type)) if t and family_of(t) == family),
                      None)
    fix = f"use template: {suggestion}" if suggestion else f"use a {family} template"
    return [f"template: {template!r} is not a template for {model}: its config.json says model_type "
            f"{model_type!r} (a {family} model); {fix}"]


def _check_file(report: FileReport, config: dict[str, Any], catalog: Catalog, dataset_dir: str | None) -> None:
    from lfgen.paths import config_root

    root = config_root(report.path)
    report.problems += schema.check(config, catalog)
    report.problems += _model_problems(config, root)
    template = config.get("template")
    if isinstance(template, str) and template not in catalog.templates:
        report.problems.append(f"template: {template!r} is not a LlamaFactory {catalog.version} template"
                               f"{did_you_mean(template, catalog.templates)}")
    problems, notes, info = _datasets(config, root, dataset_dir)
    report.problems += problems
    report.notes += notes
    if report.kind is not None and report.kind.parser in ("train", "infer"):
        from lfgen.builder import vlm_checks

        problems, notes = vlm_checks.check(config, root, info)
        report.problems += problems
        report.notes += notes


def _parser_problem(message: str, already: list[str], config: dict[str, Any] | None = None) -> str | None:
    """LlamaFactory's message, unless it only repeats unknown keys lfgen already reported; its refusal of a DeepSpeed
    config where deepspeed is not installed (transformers' PackageNotFoundError) as one readable line."""
    unused = _UNUSED_KEYS.search(message)
    if unused:
        keys = re.findall(r"'([^']+)'", unused.group(1))
        if all(any(line.startswith(f"{key}:") for line in already) for key in keys):
            return None
    if config and config.get("deepspeed") and _NO_DEEPSPEED.search(message):
        return (f"deepspeed: LlamaFactory refuses a DeepSpeed config where the deepspeed package is not installed, so "
                f"its parser could not check the rest (got {config['deepspeed']}); pip install deepspeed in "
                "LlamaFactory's Python, as the machine that trains it needs")
    return f"LlamaFactory's parser: {message}"


def _read(reports: list[FileReport]) -> dict[str, dict[str, Any]]:
    """The LlamaFactory configs among the files, by index; the others get their kind or their problem."""
    configs: dict[str, dict[str, Any]] = {}
    for index, report in enumerate(reports):
        try:
            config = load_config(report.path)
        except InputError as exc:
            report.problems.append(str(exc).removeprefix(f"{report.path}: "))
            continue
        report.kind = classify(config)
        if report.kind.is_llamafactory:
            configs[str(index)] = config
        else:
            report.notes.append(f"{report.kind.line}; not checked")
    return configs


# Settings a machine without a GPU cannot train (LlamaFactory's parser refuses only bf16 and pure_bf16 there).
_NEEDS_GPU = {"bf16": "bf16 (its parser refuses it without a GPU unless use_cpu is set: it was parsed as on a GPU, "
                      "with use_cpu added)",
              "pure_bf16": "pure_bf16 (parsed as bf16 with use_cpu added)",
              "fp16": "fp16 (mixed precision needs a GPU)",
              "quantization_bit": "quantization_bit (bitsandbytes needs a GPU)",
              "deepspeed": "deepspeed (DeepSpeed needs GPUs)"}


def _cannot_run_here(configs: dict[str, dict[str, Any]], reports: list[FileReport]) -> None:
    """Say, per training file, what this GPU-less machine cannot train: the file is checked as on the GPU it is
    written for, and is valid there, but `lfgen run` here would fail (R-HW-CPU)."""
    for index, config in configs.items():
        report = reports[int(index)]
        if report.kind.parser != "train":
            continue
        cpu_ok = ("bf16", "pure_bf16") if config.get("use_cpu") is True else ()  # bf16 on a CPU with use_cpu runs
        found = [why for key, why in _NEEDS_GPU.items() if key not in cpu_ok and config.get(key) not in (None, False, "", 0)]
        if found:
            report.cannot_run_here = (f"no GPU here, so this machine cannot train it: {'; '.join(found)}; it is checked "
                                      "as on the GPU it is written for (for a CPU run: lfgen preset NAME --gpu cpu)")


def validate(paths: list[str], *, run_parser: bool = True, dataset_dir: str | None = None) -> Report:
    """Check every file; LlamaFactory's parser runs once for all of them when it is installed, from the
    current directory. *dataset_dir* replaces each file's dataset_dir for the dataset check."""
    reports = [FileReport(str(p)) for p in paths]
    configs = _read(reports)
    catalog, parser_errors = snapshot(), {}
    python = find_python() if run_parser else None
    if python is not None:
        modes = {i: reports[int(i)].kind.parser for i in configs}
        result = probe(configs, python=python, modes=modes, cwd=os.getcwd())
        catalog, parser_errors = result.catalog, result.errors
        lf_info = {"version": catalog.version, "python": python, "parser_run": True, "cuda": catalog.cuda}
    else:
        why = "skipped (--no-parser)" if not run_parser else f"not installed ({INSTALL_HINT})"
        lf_info = {"version": catalog.version, "python": None, "parser_run": False, "cuda": None,
                   "note": f"LlamaFactory {why}: checked against lfgen's snapshot of {catalog.version}, "
                           "its own parser was not run"}
    for index, config in configs.items():
        report = reports[int(index)]
        _check_file(report, config, catalog, dataset_dir)
        error = parser_errors.get(index)
        if error:
            problem = _parser_problem(error, report.problems, config)
            if problem:
                report.problems.append(problem)
    if python is not None and catalog.cuda is False:
        _cannot_run_here(configs, reports)
    return Report(files=reports, llamafactory=lf_info)
