"""``lfgen validate``: every problem of every config file, found at once.

Four layers, each catching what the one before cannot:
1. the file itself (exists, YAML, a mapping);
2. lfgen's schema (types, choices, ranges; LlamaFactory's parser checks none of them);
3. names that must exist: keys (with did-you-mean), the chat template, the datasets in
   ``<dataset_dir>/dataset_info.json`` (from the root the config records, else the working directory);
4. LlamaFactory's own ``get_train_args``, in one subprocess for all files, when it is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder import datasets

from lfgen.builder import schema
from lfgen.errors import INSTALL_HINT, InputError, did_you_mean
from lfgen.catalogs.llamafactory import Catalog, find_python, probe, snapshot
from lfgen.yamlio import load_config

_UNUSED_KEYS = re.compile(r"Some keys are not used by the HfArgumentParser: \[(.*)\]")


@dataclass
class FileReport:
    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "problems": self.problems, "notes": self.notes}


@dataclass
class Report:
    files: list[FileReport]
    llamafactory: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "llamafactory": self.llamafactory, "files": [f.to_json() for f in self.files]}


def _dataset_problems(config: dict[str, Any], root: Path | None = None) -> tuple[list[str], list[str]]:
    names = {key: datasets.split_names(config.get(key)) for key in ("dataset", "eval_dataset")}
    if not any(names.values()):
        return [], []
    dataset_dir = str(config.get("dataset_dir") or "data")
    if dataset_dir.startswith("REMOTE:") or dataset_dir == "ONLINE":
        return [], [f"dataset_dir {dataset_dir}: datasets on the hub are not checked offline"]
    relative = not Path(dataset_dir).is_absolute()
    if relative and root is not None:  # lfgen run starts LlamaFactory in the config's recorded root
        dataset_dir = str(root / dataset_dir)
    try:
        info = datasets.load_info(dataset_dir)
    except InputError as exc:
        where = "" if not relative else (f" (relative to the config's root {root}, its lfgen-root: line)" if root
                                         else " (LlamaFactory resolves it from the current directory)")
        return [f"{exc}{where}"], []
    problems = []
    for key, found in names.items():
        problems += datasets.unregistered(found, info, dataset_dir, key)
    return problems, []


def _check_file(report: FileReport, config: dict[str, Any], catalog: Catalog) -> None:
    from lfgen.paths import config_root

    report.problems += schema.check(config, catalog)
    template = config.get("template")
    if isinstance(template, str) and template not in catalog.templates:
        report.problems.append(f"template: {template!r} is not a LlamaFactory {catalog.version} template"
                               f"{did_you_mean(template, catalog.templates)}")
    problems, notes = _dataset_problems(config, config_root(report.path))
    report.problems += problems
    report.notes += notes


def _parser_problem(message: str, already: list[str]) -> str | None:
    """LlamaFactory's message, unless it only repeats unknown keys lfgen already reported."""
    unused = _UNUSED_KEYS.search(message)
    if unused:
        keys = re.findall(r"'([^']+)'", unused.group(1))
        if all(any(line.startswith(f"{key}:") for line in already) for key in keys):
            return None
    return f"LlamaFactory's parser: {message}"


def validate(paths: list[str], *, run_parser: bool = True) -> Report:
    """Check every file; LlamaFactory's parser runs once for all of them when it is installed."""
    reports = [FileReport(str(p)) for p in paths]
    configs: dict[str, dict[str, Any]] = {}
    for index, report in enumerate(reports):
        try:
            configs[str(index)] = load_config(report.path)
        except InputError as exc:
            report.problems.append(str(exc).removeprefix(f"{report.path}: "))
    catalog, parser_errors = snapshot(), {}
    python = find_python() if run_parser else None
    if python is not None:
        result = probe(configs, python=python)
        catalog, parser_errors = result.catalog, result.errors
        lf_info = {"version": catalog.version, "python": python, "parser_run": True, "cuda": catalog.cuda}
    else:
        why = "skipped (--no-parser)" if not run_parser else f"not installed ({INSTALL_HINT})"
        lf_info = {"version": catalog.version, "python": None, "parser_run": False, "cuda": None,
                   "note": f"LlamaFactory {why}: checked against lfgen's snapshot of {catalog.version}, "
                           "its own parser was not run"}
    for index, config in configs.items():
        report = reports[int(index)]
        _check_file(report, config, catalog)
        error = parser_errors.get(index)
        if error:
            problem = _parser_problem(error, report.problems)
            if problem:
                report.problems.append(problem)
    adjusted = [r.path for i, r in enumerate(reports) if str(i) in configs and python is not None
                and catalog.cuda is False and configs[str(i)].get("bf16") is True and "use_cpu" not in configs[str(i)]]
    if adjusted:
        lf_info["note"] = (f"no GPU here: LlamaFactory's parser refuses bf16 without one, so it ran with use_cpu: true "
                           f"added for {len(adjusted)} bf16 file(s); the files are unchanged")
    return Report(files=reports, llamafactory=lf_info)
