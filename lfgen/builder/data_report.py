"""``lfgen data``: what is in the datasets a config trains on, before a GPU hour is spent on them.

For each dataset registered in ``dataset_info.json``: rows, a format check against the registration,
exact duplicates, overlap with the eval sets, the token-length distribution and how many samples
cutoff_len would truncate, with the cutoff_len R-DATA-CUTOFF would write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder import data_lengths, data_rows, datasets
from lfgen.builder.data_lengths import Lengths
from lfgen.errors import InputError

PROBLEM_LINES = 10  # problem lines kept per dataset (the count is always complete)


@dataclass
class DatasetReport:
    """One dataset's rows, problems, duplicates and lengths."""

    name: str
    formatting: str
    files: list[str]
    rows: int
    problem_count: int
    problems: list[str]
    duplicates: int
    lengths: Lengths
    truncated: int
    eval: bool = False
    overlap: dict[str, int] = field(default_factory=dict)  # eval sets: rows also in the training sets

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "formatting": self.formatting, "files": self.files, "rows": self.rows,
                "eval": self.eval, "problem_count": self.problem_count, "problems": self.problems,
                "duplicates": self.duplicates, "lengths": self.lengths.to_json(), "truncated": self.truncated,
                "overlap": self.overlap}


@dataclass
class DataReport:
    """``lfgen data``'s answer; ``to_json`` is the documented ``--json`` shape."""

    dataset_dir: str
    cutoff_len: int
    datasets: list[DatasetReport]
    lengths: Lengths  # the training sets together
    truncated: int
    suggested_cutoff: int
    suggested_how: str
    method: str

    @property
    def ok(self) -> bool:
        return not any(d.problem_count for d in self.datasets)

    def to_json(self) -> dict[str, Any]:
        return {"dataset_dir": self.dataset_dir, "cutoff_len": self.cutoff_len, "ok": self.ok,
                "method": self.method, "datasets": [d.to_json() for d in self.datasets],
                "train": {"lengths": self.lengths.to_json(), "truncated": self.truncated,
                          "suggested_cutoff_len": self.suggested_cutoff, "rule": "R-DATA-CUTOFF",
                          "why": self.suggested_how}}


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass
class _Read:
    name: str
    formatting: str
    files: list[str]
    texts: list[str]
    prompts: list[bytes]
    fulls: list[bytes]
    problems: list[str]
    problem_count: int


def _read(name: str, entry: dict[str, Any], dataset_dir: str | Path) -> _Read:
    files = [str(p) for p in data_rows.data_files(name, entry, dataset_dir)]
    texts, prompts, fulls, problems, count = [], [], [], [], 0
    for sample, found in data_rows.samples(name, entry, dataset_dir):
        count += len(found)
        problems += found[:max(0, PROBLEM_LINES - len(problems))]
        if sample is None:
            texts.append("")
            continue
        texts.append(sample.text)
        prompts.append(_key(sample.prompt))
        fulls.append(_key(sample.text))
    return _Read(name, entry.get("formatting", "alpaca"), files, texts, prompts, fulls, problems, count)


def rows_of(names: list[str], dataset_dir: str | Path) -> list[int]:
    """Rows of each dataset, for a progress bar's total (the cheap count of lfgen.builder.datasets)."""
    info = datasets.load_info(dataset_dir)
    return [datasets.count_rows(n, info[n], dataset_dir).rows or 0 for n in names if n in info]


def texts_of(names: list[str], dataset_dir: str | Path) -> list[str]:
    """The text of every training sample of *names*, for the build's R-DATA-CUTOFF."""
    info = datasets.load_info(dataset_dir)
    problems = datasets.unregistered(names, info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    return [t for n in names for t in _read(n, info[n], dataset_dir).texts if t]


def _check_model(model: str) -> None:
    """--model names a local model folder (its tokenizer counts); anything else is an error, never a silent
    fall-back to the approximation."""
    from lfgen.yamlio import check_path

    if not check_path(model, "--model").is_dir():
        what = "is not a folder" if Path(model).exists() else "no such folder"
        raise InputError(f"--model: {model}: {what}; give a local model folder (its tokenizer counts the tokens), or "
                         "leave --model out for the stated approximation")


def report(names: list[str], dataset_dir: str | Path, *, model: str | None = None, cutoff_len: int = 2048,
           eval_names: list[str] | None = None, progress: Callable[[int], None] | None = None) -> DataReport:
    """Read, check and measure *names* (training) and *eval_names* (evaluation) from *dataset_dir*;
    *progress* is called with each batch of samples measured."""
    eval_names = eval_names or []
    if not names:
        raise InputError("data: name at least one dataset registered in dataset_info.json")
    if cutoff_len < 1:
        raise InputError(f"--cutoff-len: must be >= 1 (got {cutoff_len})")
    if model is not None:
        _check_model(model)
    info = datasets.load_info(dataset_dir)
    problems = datasets.unregistered([*names, *eval_names], info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    read = [_read(n, info[n], dataset_dir) for n in [*names, *eval_names]]
    for r in read:
        if not r.texts:
            raise InputError(f"dataset {r.name!r}: {', '.join(r.files) or 'its file_name'} holds no rows; LlamaFactory "
                             f"cannot train or evaluate on an empty dataset: add rows or fix its file_name in "
                             f"{Path(dataset_dir) / datasets.INFO_FILE}")
    reports, train_lengths, method = [], [], ""
    train_prompts = {k for r in read[:len(names)] for k in r.prompts}
    train_fulls = {k for r in read[:len(names)] for k in r.fulls}
    for i, r in enumerate(read):
        lengths, method = data_lengths.measure([t for t in r.texts if t], model, progress)
        is_eval = i >= len(names)
        if not is_eval:
            train_lengths += lengths
        overlap = {"same_sample": sum(k in train_fulls for k in r.fulls),
                   "same_prompt": sum(k in train_prompts for k in r.prompts)} if is_eval else {}
        reports.append(DatasetReport(
            name=r.name, formatting=r.formatting, files=r.files, rows=len(r.texts), problem_count=r.problem_count,
            problems=r.problems, duplicates=len(r.fulls) - len(set(r.fulls)), lengths=Lengths.of(lengths, method),
            truncated=data_lengths.truncated(lengths, cutoff_len), eval=is_eval, overlap=overlap))
    total = Lengths.of(train_lengths, method)
    suggested, how = data_lengths.cutoff_for(total, data_lengths.context_length(model))
    return DataReport(dataset_dir=str(dataset_dir), cutoff_len=cutoff_len, datasets=reports, lengths=total,
                      truncated=data_lengths.truncated(train_lengths, cutoff_len), suggested_cutoff=suggested,
                      suggested_how=how, method=method)
