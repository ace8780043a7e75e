"""A user's data files, read the way LlamaFactory reads them (a JSON list or columns, JSON lines, CSV with a
header, parquet), with the limits every reader of a user's file has (``lfgen.yamlio``): a regular file (a FIFO
would block, ``/dev/zero`` never end), UTF-8, JSON nested at most ~1,000 levels (libyaml's limit for a config)
and numbers Python converts, a CSV field as long as the file itself. There is no limit on a file's size:
datasets are large by nature, and LlamaFactory reads them whole too.

Every problem is one InputError naming the file (and its line, where it has lines). ``lfgen data`` (through
``data_rows``), the row count of ``lfgen preset`` and ``lfgen tune`` (``datasets.count_rows``) and lfgen eval's
held-out count all read through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lfgen.errors import InputError
from lfgen.yamlio import open_regular, parse_json, read_text

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_WHAT = "data file"
_JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "true or false", type(None): "null",
               dict: "an object"}


def files_of(path: Path) -> list[Path]:
    """The data files at *path*: the file itself, or a folder's files with a suffix LlamaFactory reads."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return [path]


def read_records(path: Path) -> list[Any]:
    """Every record of one data file, in order; one InputError for a file LlamaFactory could not read."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(_jsonl(path))
    if suffix == ".json":
        return _json(path)
    if suffix == ".csv":
        return _csv(path, count=False)
    if suffix == ".parquet":
        return _parquet(path, count=False)
    raise InputError(f"{path}: a {suffix or 'extension-less'} file; LlamaFactory reads {', '.join(SUFFIXES)}")


def count_records(path: Path) -> int:
    """How many records *path* holds, as cheaply as its format allows (JSON lines are counted, not parsed)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open_regular(path, _WHAT) as handle:
            return sum(1 for line in handle if line.strip())
    if suffix == ".csv":
        return _csv(path, count=True)
    if suffix == ".parquet":
        return _parquet(path, count=True)
    return len(read_records(path))


def _json(path: Path) -> list[Any]:
    data = parse_json(read_text(path, _WHAT), str(path), "fix the file")
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return _columns(data, path)
    raise InputError(f"{path}: holds {_JSON_TYPES.get(type(data), 'a value')}; LlamaFactory reads a list of rows "
                     "[{...}, ...]; fix the file")


def _columns(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """A columnar file, ``{"instruction": [...], "output": [...]}``: one row per position. Anything else (a
    single row's strings, which zip would cut into characters) is refused."""
    shape = 'LlamaFactory reads a list of rows [{"instruction": ..., "output": ...}, ...] or columns of one length'
    for key, value in data.items():
        if not isinstance(value, list):
            raise InputError(f"{path}: holds a JSON object whose {key!r} is {_JSON_TYPES.get(type(value), 'a value')}, "
                             "not a list; "
                             f"{shape}; fix the file")
    lengths = {key: len(value) for key, value in data.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{key!r} {count:,}" for key, count in lengths.items())
        raise InputError(f"{path}: its columns differ in length ({counts}); {shape}; fix the file")
    return [dict(zip(data, row)) for row in zip(*data.values())]


def _jsonl(path: Path) -> Any:
    with open_regular(path, _WHAT) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path} line {number}: not UTF-8 text; save the file as UTF-8") from None
            yield parse_json(text, f"{path} line {number}", "fix the line")


def _csv(path: Path, *, count: bool) -> Any:
    import csv
    import io

    with open_regular(path, _WHAT) as handle:
        # csv's default field limit (128 KiB) would refuse a long document LlamaFactory (pyarrow) reads;
        # no field is longer than the file, so the file's size is the limit.
        previous = csv.field_size_limit(max(csv.field_size_limit(), os.fstat(handle.fileno()).st_size + 1))
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
        try:
            return sum(1 for _ in reader) if count else list(reader)
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a UTF-8 text file; save it as UTF-8") from None
        except csv.Error as exc:
            raise InputError(f"{path} line {reader.line_num}: not readable as CSV ({exc}); fix the file") from None
        finally:
            csv.field_size_limit(previous)


def _parquet(path: Path, *, count: bool) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # pandas' parquet engine; imported only for parquet data
    except ImportError:
        raise InputError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    with open_regular(path, _WHAT) as handle:
        try:
            parquet = pq.ParquetFile(handle)
            return parquet.metadata.num_rows if count else parquet.read().to_pylist()
        except (pa.ArrowException, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: not readable as parquet ({reason}); fix or export the file again") from None
