"""A user's data files read with the limits every reader of a user's file has (issue 24): the shapes
LlamaFactory reads are read, the rest is one InputError naming the file, and no reader blocks or crashes.
The CLI side of each refusal (one Error line, nothing written) is in tests/cli/test_bad_input.py."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import pytest

from lfgen.builder.data_files import count_records, read_records
from lfgen.builder.datasets import checked_entry, count_rows
from lfgen.errors import InputError

ROWS = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]


def _write(path: Path, fmt: str, rows: list[dict]) -> Path:
    if fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "columns":
        path.write_text(json.dumps({key: [row[key] for row in rows] for key in rows[0]}), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt, suffix", [("json", ".json"), ("columns", ".json"), ("jsonl", ".jsonl"),
                                         ("csv", ".csv"), ("parquet", ".parquet")])
def test_every_format_reads_its_rows_and_counts_them_alike(tmp_path, fmt, suffix):
    path = _write(tmp_path / f"d{suffix}", fmt, ROWS)
    assert read_records(path) == ROWS
    assert count_records(path) == 2


def test_a_json_object_of_strings_is_refused_not_cut_into_characters(tmp_path):
    """Issue 24: {"instruction": "abc", "output": "def"} was read as 3 rows of single characters."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"instruction": "abc", "output": "def"}), encoding="utf-8")
    with pytest.raises(InputError, match=r"d.json: holds a JSON object whose 'instruction' is a string, not a list"):
        read_records(path)
    with pytest.raises(InputError, match="whose 'instruction' is a string"):
        count_records(path)  # the row count of lfgen preset reads it the same way
    path.write_text(json.dumps({"instruction": ["a", "b"], "output": ["c"]}), encoding="utf-8")
    with pytest.raises(InputError, match=r"columns differ in length \('instruction' 2, 'output' 1\)"):
        read_records(path)


def test_a_300_kb_csv_field_is_read_and_the_csv_limit_is_restored(tmp_path):
    """Issue 24: a field over csv's 128 KiB default was a traceback; LlamaFactory (pyarrow) reads it."""
    long = "x" * 300_000
    path = _write(tmp_path / "d.csv", "csv", [{"instruction": "q", "output": long}])
    before = csv.field_size_limit()
    assert read_records(path) == [{"instruction": "q", "output": long}] and count_records(path) == 1
    assert csv.field_size_limit() == before


@pytest.mark.parametrize("name, text, says", [
    ("deep.json", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("digits.json", '[{"instruction": "a", "output": ' + "9" * 5000 + "}]", "5000 digits"),
    ("bad.jsonl", '{"instruction": "a"}\n\n{"instruction": \n', r"bad.jsonl line 3: not valid JSON"),
    ("deep.jsonl", "[" * 5000 + "]" * 5000 + "\n", "line 1: nested too deeply"),
    ("scalar.json", "5", "holds a number; LlamaFactory reads a list of rows"),
    ("garbage.parquet", "not parquet", "garbage.parquet: not readable as parquet"),
    ("empty.parquet", "", "empty.parquet: not readable as parquet"),
    ("notes.txt", "hello", "a .txt file; LlamaFactory reads"),
])
def test_a_malformed_file_is_one_error_naming_it(tmp_path, name, text, says):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=says):
        read_records(tmp_path / name)


@pytest.mark.parametrize("name, data", [
    ("latin1.json", '[{"instruction": "caf\u00e9"}]'.encode("latin-1")),
    ("latin1.jsonl", '{"instruction": "caf\u00e9"}\n'.encode("latin-1")),
    ("latin1.csv", "instruction\ncaf\u00e9\n".encode("latin-1")),
])
def test_a_file_that_is_not_utf8_is_one_error(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError, match="not (a )?UTF-8 text"):
        read_records(tmp_path / name)


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path):
    """Issue 24: lfgen data on a FIFO blocked for ever (and /dev/zero would fill the memory)."""
    os.mkfifo(tmp_path / "fifo.jsonl")
    os.symlink("/dev/zero", tmp_path / "zero.json")
    outcome = {}

    def read_all():
        for name in ("fifo.jsonl", "zero.json"):
            for reader in (read_records, count_records):
                try:
                    reader(tmp_path / name)
                except InputError as exc:
                    outcome[name, reader.__name__] = str(exc)

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a reader blocked"
    assert len(outcome) == 4 and all("not a regular file" in why for why in outcome.values()), outcome


def test_an_empty_file_counts_no_rows_and_preset_says_so(tmp_path):
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"e": {"file_name": "e.csv"}}), encoding="utf-8")
    (tmp_path / "e.csv").write_text("instruction,output\n", encoding="utf-8")
    size = count_rows("e", {"file_name": "e.csv"}, tmp_path)
    assert size.rows is None and "holds no rows" in size.note  # never N = 0 samples for the sizing rules


@pytest.mark.parametrize("entry, says", [
    ({"file_name": "d.json", "columns": "prompt"}, "columns must map each role to a column name"),
    ({"file_name": "d.json", "columns": {"prompt": ["instruction"]}}, "columns must map"),
    ({"file_name": "d.json", "tags": ["from"]}, "tags must map each tag to its value"),
    ({"file_name": "d.json", "formatting": ["alpaca"]}, "formatting must be a string"),
])
def test_an_entry_of_the_wrong_shape_names_the_field(tmp_path, entry, says):
    with pytest.raises(InputError, match=says):
        checked_entry("d", entry, tmp_path)
    assert checked_entry("d", {"file_name": "d.json", "formatting": "openai", "columns": {"system": None}},
                         tmp_path)  # LlamaFactory's third format, a column switched off

