"""The rows of one dataset registered in ``dataset_info.json``, read the way LlamaFactory reads them:
the file (json, jsonl, csv, parquet), the format (alpaca or sharegpt) and its columns and tags.

The files are read by ``data_files`` (with its limits: no FIFO, UTF-8, nesting, numbers). Each row becomes a
``Sample`` (the prompt side and the answer side as text) or a problem line naming the row, the column and what
is wrong; ``lfgen data`` and R-DATA-CUTOFF read rows through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.builder.data_files import SUFFIXES, files_of, read_records
from lfgen.builder.datasets import INFO_FILE, checked_entry, data_path
from lfgen.errors import InputError

_REMOTE = ("hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "om_hub_url")
# LlamaFactory's defaults for the columns and tags of each format (its data/README.md).
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": None, "tools": None}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


@dataclass(frozen=True)
class Sample:
    """One row as text: what the model reads (prompt side) and what it learns to write (answer side)."""

    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.answer}"


def data_files(name: str, entry: dict[str, Any], dataset_dir: str | Path) -> list[Path]:
    """The local files of a registered dataset; an InputError names what is missing."""
    info = Path(dataset_dir) / INFO_FILE
    entry = checked_entry(name, entry, dataset_dir)
    if any(entry.get(src) for src in _REMOTE):
        raise InputError(f"{name}: the dataset is on a hub ({info}); lfgen reads local files only: download it "
                         "and register its file_name")
    file_name = entry.get("file_name")
    if not file_name:
        raise InputError(f"{name}: no file_name in {info}; add the file's name relative to {dataset_dir}")
    path = data_path(name, file_name, dataset_dir)
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{name}: file_name {file_name!r} in {info} points to {path}, which does not exist; "
                         "fix file_name")
    files = files_of(path)
    for file in files:
        if file.suffix.lower() not in SUFFIXES:
            raise InputError(f"{name}: {file} is a {file.suffix or 'extension-less'} file; LlamaFactory reads "
                             f"{', '.join(SUFFIXES)}")
    return files


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)  # parquet: bytes, dates


def _alpaca(row: dict[str, Any], columns: dict[str, Any], where: str) -> tuple[Sample | None, list[str]]:
    missing = [f"{role} column {columns[role]!r}" for role in ("prompt", "response") if columns[role] not in row]
    if missing:
        return None, [f"{where}: no {' and no '.join(missing)}"]
    parts = [_text(row.get(columns[k])) for k in ("system", "prompt", "query") if columns.get(k)]
    prompt = "\n".join(part for part in parts if part)  # LlamaFactory joins instruction and input by a newline
    history = row.get(columns["history"]) if columns.get("history") else None
    if isinstance(history, list):
        prompt = "\n".join(_text(turn) for pair in history for turn in (pair if isinstance(pair, list) else [pair])) \
            + "\n" + prompt
    answer = _text(row.get(columns["response"]))
    problems = []
    if not _text(row.get(columns["prompt"])).strip() and not _text(row.get(columns.get("query") or "")).strip():
        problems.append(f"{where}: empty prompt ({columns['prompt']!r} and {columns['query']!r} are empty)")
    if not answer.strip():
        problems.append(f"{where}: empty answer ({columns['response']!r})")
    return Sample(prompt, answer), problems


def _sharegpt(row: dict[str, Any], columns: dict[str, Any], tags: dict[str, str],
              where: str) -> tuple[Sample | None, list[str]]:
    messages = row.get(columns["messages"])
    if not isinstance(messages, list) or not messages:
        return None, [f"{where}: no messages in column {columns['messages']!r}"]
    role, content = tags["role_tag"], tags["content_tag"]
    if messages and isinstance(messages[0], dict) and messages[0].get(role) == tags["system_tag"]:
        messages = messages[1:]  # a leading system turn is allowed and not counted
    asks, answers = (tags["user_tag"], tags["observation_tag"]), (tags["assistant_tag"], tags["function_tag"])
    prompt, answer, problems = [_text(row.get(columns["system"]))] if columns.get("system") else [], [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or role not in message or content not in message:
            problems.append(f"{where}: message {i} has no {role!r} or {content!r} key")
            continue
        expected = asks if i % 2 == 0 else answers
        if message[role] not in expected:
            problems.append(f"{where}: message {i} has role {message[role]!r}, expected {' or '.join(expected)} "
                            "(turns alternate user, assistant)")
        text = _text(message[content])
        if not text.strip():
            problems.append(f"{where}: message {i} ({message[role]}) is empty")
        (prompt if i < len(messages) - 1 else answer).append(text)
    if len(messages) % 2:
        problems.append(f"{where}: {len(messages)} messages; a conversation ends with the assistant's turn")
    return Sample("\n".join(prompt).strip(), "\n".join(answer)), problems


def samples(name: str, entry: dict[str, Any], dataset_dir: str | Path) -> Iterator[tuple[Sample | None, list[str]]]:
    """Each row of a registered dataset as (sample or None, problems), in file order."""
    entry = checked_entry(name, entry, dataset_dir)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise InputError(f"{name}: formatting {formatting!r} in {Path(dataset_dir) / INFO_FILE}; LlamaFactory knows "
                         "alpaca and sharegpt")
    defaults = ALPACA_COLUMNS if formatting == "alpaca" else SHAREGPT_COLUMNS
    columns = {**defaults, **(entry.get("columns") or {})}
    tags = {**SHAREGPT_TAGS, **(entry.get("tags") or {})}
    for path in data_files(name, entry, dataset_dir):
        for index, row in enumerate(read_records(path)):
            where = f"{path.name} row {index + 1}"
            if not isinstance(row, dict):
                yield None, [f"{where}: a {type(row).__name__}, not an object with columns"]
            elif formatting == "alpaca":
                yield _alpaca(row, columns, where)
            else:
                yield _sharegpt(row, columns, tags, where)
