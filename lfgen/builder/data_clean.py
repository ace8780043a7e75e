"""``lfgen data NAME --drop-empty --dedupe -o FILE``: a cleaned copy of a dataset, registered beside it.

A row is *empty* when a prompt or an answer holds nothing but whitespace (``Sample.empty``): LlamaFactory keeps it
and the model learns to stop at once; a *duplicate* repeats an earlier row's prompt and answer exactly, with the
same images or videos (with val_size it can land on both sides of the split). The copy keeps every other row as it
was (its columns, in order), in JSON (``.json``) or JSON lines (``.jsonl``), and ``dataset_info.json`` gains an
entry for it: the original's registration (formatting, columns, tags) with the new file_name. The same count of
usable rows sizes ``lfgen preset``, sweep and tune (R-DATA-CUTOFF's reading, lfgen.builder.data_rules).

Every check (the file, the name, the folder) comes before anything is written; nothing is replaced without --force.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.builder import data_rows, datasets
from lfgen.builder.data_files import read_records
from lfgen.errors import InputError

SUFFIXES = (".json", ".jsonl")


def key(text: str) -> bytes:
    """A compact form of a row's identity (data_rows.Sample.identity) for counting duplicates."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass
class Usable:
    """A dataset's rows as training will use them: the usable samples, and how many were not."""

    samples: list[data_rows.Sample]
    empty: int
    duplicates: int


def usable(samples: list[data_rows.Sample | None]) -> Usable:
    """The samples that are neither empty nor a repeat of an earlier one (rows the reader could not parse are
    left to lfgen data's problems)."""
    seen: set[bytes] = set()
    kept, empty, duplicates = [], 0, 0
    for sample in samples:
        if sample is None:
            continue
        if sample.empty:
            empty += 1
            continue
        identity = key(sample.identity)
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        kept.append(sample)
    return Usable(kept, empty, duplicates)


@dataclass
class Cleaned:
    """What ``clean`` wrote: the file, the registered name, and the rows kept and dropped."""

    path: Path
    name: str
    rows: int
    kept: int
    empty: int
    duplicates: int


def clean(name: str, dataset_dir: str | Path, out: str | Path, *, drop_empty: bool, dedupe: bool,
          register: str | None = None, force: bool = False) -> Cleaned:
    """Write the rows of dataset *name* less its empty rows (*drop_empty*) and repeats (*dedupe*) to *out*, and
    register the copy as *register* (default ``<name>_clean``) in *dataset_dir*/dataset_info.json."""
    from lfgen.yamlio import check_path, write_atomic, write_new

    if not (drop_empty or dedupe):
        raise InputError("-o: say what to drop: --drop-empty, --dedupe or both")
    out = check_path(out, "-o/--output")
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"-o/--output: {out} must end in .json or .jsonl (the formats LlamaFactory reads and lfgen "
                         "writes); e.g. -o data/my_sft_clean.jsonl")
    info_path = Path(dataset_dir) / datasets.INFO_FILE
    info = datasets.load_info(dataset_dir)
    problems = datasets.unregistered([name], info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    register = register or f"{name}_clean"
    if register in info and not force:
        raise InputError(f"--register: {register!r} is already in {info_path}; choose another name with --register, "
                         "or pass --force to replace its entry")
    entry = info[name]
    files = data_rows.data_files(name, entry, dataset_dir)
    if out.resolve() in {f.resolve() for f in files}:
        raise InputError(f"-o/--output: {out} is the dataset's own file; write the cleaned copy beside it")
    if (out.exists() or out.is_symlink()) and not force:
        raise InputError(f"-o/--output: {out} already exists; pass --force to replace it")
    records = [record for path in files for record in read_records(path)]
    read = [sample for sample, _ in data_rows.samples(name, entry, dataset_dir)]
    kept_rows, counts = _filter(records, read, drop_empty, dedupe)
    text = ("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in kept_rows)
            if out.suffix.lower() == ".jsonl" else json.dumps(kept_rows, ensure_ascii=False, indent=1, default=str))
    relative = os.path.relpath(out.resolve(), Path(dataset_dir).resolve())
    file_name = relative if not relative.startswith("..") else str(out.resolve())
    updated = {**info, register: {**{k: v for k, v in entry.items() if k != "file_name"}, "file_name": file_name}}
    write_new(out, text, force=force, option="-o/--output")
    write_atomic(info_path, json.dumps(updated, ensure_ascii=False, indent=2) + "\n")
    return Cleaned(out, register, len(records), len(kept_rows), *counts)


def _filter(records: list[Any], read: list[data_rows.Sample | None], drop_empty: bool,
            dedupe: bool) -> tuple[list[Any], tuple[int, int]]:
    """The records to keep, and how many were dropped as empty and as duplicates."""
    seen: set[bytes] = set()
    kept, empty, duplicates = [], 0, 0
    for record, sample in zip(records, read):
        if sample is not None and drop_empty and sample.empty:
            empty += 1
            continue
        if sample is not None and dedupe:
            identity = key(sample.identity)
            if identity in seen:
                duplicates += 1
                continue
            seen.add(identity)
        kept.append(record)
    return kept, (empty, duplicates)
