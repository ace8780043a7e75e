"""Local datasets: the names registered in ``<dataset_dir>/dataset_info.json`` and their sizes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, did_you_mean
from lfgen.layout import DATASET_INFO

INFO_FILE = DATASET_INFO
_REMOTE_SOURCES = ("hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "om_hub_url")


def load_info(dataset_dir: str | Path) -> dict[str, Any]:
    """Parse ``dataset_info.json``; a missing or broken file is one InputError."""
    path = Path(dataset_dir) / INFO_FILE
    try:
        is_dir = Path(dataset_dir).is_dir()
    except OSError as exc:  # too long, no permission
        from lfgen.errors import short_path
        from lfgen.yamlio import path_problem

        raise InputError(f"dataset_dir: {short_path(dataset_dir)} cannot be read: {path_problem(exc)}") from None
    if not is_dir:
        raise InputError(f"dataset_dir: {dataset_dir} is not a directory; pass --dataset-dir with the folder "
                         f"that holds {INFO_FILE}")
    if not path.exists() and not path.is_symlink():  # a FIFO or a folder there: read_json_object says what it is
        raise InputError(f"dataset_dir: {dataset_dir} has no {INFO_FILE}; register your data there "
                         "(https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md) or pass another --dataset-dir")
    from lfgen.yamlio import read_json_object

    return read_json_object(path, str(path), "fix the file",
                            what="a JSON object mapping dataset names to their descriptions")


def split_names(value: Any) -> list[str]:
    """LlamaFactory's comma list (``dataset: a,b``) as names."""
    if value is None:
        return []
    return [name.strip() for name in str(value).split(",") if name.strip()]


def unregistered(names: list[str], info: dict[str, Any], dataset_dir: str | Path, key: str = "dataset") -> list[str]:
    """One problem line per name missing from dataset_info.json: close matches, or every name when few."""
    def known(name: str) -> str:
        close = did_you_mean(name, info)
        if len(info) <= 8:
            return f"{close}; registered: {', '.join(sorted(info)) or 'none'}"
        return close or f"; none of its {len(info)} names is close"

    return [f"{key}: {name!r} is not registered in {Path(dataset_dir) / INFO_FILE}{known(name)}"
            for name in names if name not in info]


def checked_entry(name: str, entry: Any, dataset_dir: str | Path) -> dict[str, Any]:
    """*entry* of dataset_info.json when it has the shape LlamaFactory reads (an object; file_name a string;
    num_samples a whole number); one InputError naming the entry, the field and the fix otherwise."""
    where = f"{Path(dataset_dir) / INFO_FILE}: dataset {name!r}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be a JSON object such as {{\"file_name\": \"{name}.json\"}} "
                         f"(got {type(entry).__name__} {json.dumps(entry)[:40]}); fix the entry")
    file_name = entry.get("file_name")
    if file_name is not None and not isinstance(file_name, str):
        raise InputError(f"{where}: file_name must be a string, a path relative to {dataset_dir} "
                         f"(got {json.dumps(file_name)[:40]}); fix the entry")
    samples = entry.get("num_samples")
    if "num_samples" in entry and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 0):
        raise InputError(f"{where}: num_samples must be a whole number of rows >= 0 "
                         f"(got {json.dumps(samples)[:40]}); fix or remove it")
    formatting = entry.get("formatting", "alpaca")
    if not isinstance(formatting, str):
        raise InputError(f"{where}: formatting must be a string such as \"alpaca\" or \"sharegpt\" "
                         f"(got {json.dumps(formatting)[:40]}); fix the entry")
    for field, shape in (("columns", 'each role to a column name, such as {"prompt": "instruction"}'),
                         ("tags", 'each tag to its value, such as {"role_tag": "from"}')):
        value = entry.get(field)  # LlamaFactory reads each as a flat object of strings
        if value is not None and (not isinstance(value, dict)
                                  or not all(v is None or isinstance(v, str) for v in value.values())):
            raise InputError(f"{where}: {field} must map {shape} (got {json.dumps(value)[:40]}); fix the entry")
    return entry


def data_path(name: str, file_name: str, dataset_dir: str | Path) -> Path:
    """Where *file_name* of dataset *name* is; a name no file system holds (over 255 bytes) is one InputError."""
    from lfgen.yamlio import check_path

    return check_path(Path(dataset_dir) / file_name, f"dataset {name!r}: file_name")


@dataclass(frozen=True)
class Size:
    rows: int | None  # None: could not be counted
    note: str


def count_rows(name: str, entry: dict[str, Any], dataset_dir: str | Path, max_samples: int | None = None) -> Size:
    """Rows LlamaFactory will read from one registered dataset, or why they can't be counted."""
    entry = checked_entry(name, entry, dataset_dir)
    if any(entry.get(src) for src in _REMOTE_SOURCES):
        return Size(None, f"{name} is on a hub; its rows can't be counted offline (pass --samples)")
    if "num_samples" in entry:
        return Size(entry["num_samples"], f"{name}: num_samples {entry['num_samples']} in {INFO_FILE}")
    file_name = entry.get("file_name")
    if not file_name:
        return Size(None, f"{name} has no file_name in {INFO_FILE} (pass --samples)")
    path = data_path(name, file_name, dataset_dir)
    if not path.exists() and not path.is_symlink():
        raise InputError(f"dataset: {name!r} points to {path}, which does not exist; fix file_name in "
                         f"{Path(dataset_dir) / INFO_FILE}")
    from lfgen.builder.data_files import count_records, files_of

    try:
        rows = sum(count_records(f) for f in files_of(path))
    except InputError as exc:
        return Size(None, f"{name}: its rows can't be counted: {exc}; pass --samples")
    if rows == 0:
        return Size(None, f"{name}: {path} holds no rows (LlamaFactory cannot train on it); fix file_name or pass "
                          "--samples")
    if max_samples is not None and rows > max_samples:
        return Size(max_samples, f"{name}: {rows:,} rows, capped by max_samples {max_samples:,}")
    return Size(rows, f"{name}: {rows:,} rows in {path}")


def stamp(names: list[str], dataset_dir: str) -> tuple[Any, ...]:
    """What identifies the data of *names* for a cache: the names, the folder, each file's size and time."""
    files = [Path(dataset_dir) / INFO_FILE, *(p for p in Path(dataset_dir).iterdir() if p.is_file())] \
        if Path(dataset_dir).is_dir() else []
    return tuple(names), str(Path(dataset_dir).resolve()), tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists())
