"""The rows of one dataset registered in ``dataset_info.json``, read the way LlamaFactory reads them:
the file (json, jsonl, csv, parquet), the format (alpaca or sharegpt) and its columns and tags.

The files are read by ``data_files`` (with its limits: no FIFO, UTF-8, nesting, numbers). Each row becomes a
``Sample`` (the prompt side and the answer side as text) or a problem line naming the row, the column and what
is wrong; ``lfgen data`` and R-DATA-CUTOFF read rows through here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.builder.data_files import SUFFIXES, files_of, read_records
from lfgen.builder.data_kinds import ALPACA_COLUMNS, SHAREGPT_COLUMNS, columns_of, kind_of  # noqa: F401
from lfgen.builder.datasets import INFO_FILE, checked_entry, data_path
from lfgen.errors import InputError

_REMOTE = ("hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "om_hub_url")
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


@dataclass(frozen=True)
class Sample:
    """One row as text: what the model reads (prompt side) and what it learns to write (answer side); and as
    LlamaFactory's converter hands it to the chat template: the system text and the turns, (role, content) with role
    user, assistant, observation or function, the answer last (none for plain text)."""

    prompt: str
    answer: str
    images: tuple[Any, ...] = ()  # the registered images column: a path per image (b"": embedded bytes)
    videos: tuple[Any, ...] = ()  # a path, or a tuple of frame paths, per video
    where: str = ""  # "file row N", for problem lines about the row's media
    system: str = ""
    turns: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.answer}"

    @property
    def identity(self) -> str:
        """What makes two rows the same row (duplicates, train/eval overlap): the text and, on a vision-language
        row, its media, so one question asked of many images is not a repeat. An embedded image or video (bytes,
        not a path) cannot be compared: its row is its own."""
        return self._with_media(self.text)

    @property
    def asks(self) -> str:
        """What makes two rows ask the same (the prompt and its media)."""
        return self._with_media(self.prompt)

    def _with_media(self, text: str) -> str:
        if not (self.images or self.videos):
            return text
        media = [m if isinstance(m, str) else repr(m) for m in (*self.images, *self.videos)]
        if any(m == b"" for m in (*self.images, *self.videos)):
            media.append(self.where)
        return "\0".join([text, *media])

    @property
    def empty(self) -> bool:
        """A prompt or an answer with nothing but whitespace in it: the row teaches nothing, or to stop at once."""
        if not self.turns:
            return not self.answer.strip()
        return any(not text.strip() for _, text in self.turns)


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


def _alpaca(row: dict[str, Any], columns: dict[str, Any], where: str,
            answered: bool = True) -> tuple[Sample | None, list[str]]:
    """An alpaca row; *answered* False: a pairwise row, whose answers are its chosen and rejected columns."""
    roles = ("prompt", "response") if answered else ("prompt",)
    missing = [f"{role} column {columns[role]!r}" for role in roles if columns[role] not in row]
    if missing:
        return None, [f"{where}: no {' and no '.join(missing)}"]
    parts = [_text(row.get(columns[k])) for k in ("system", "prompt", "query") if columns.get(k)]
    prompt = "\n".join(part for part in parts if part)  # LlamaFactory joins instruction and input by a newline
    history = row.get(columns["history"]) if columns.get("history") else None
    turns: list[tuple[str, str]] = []
    if isinstance(history, list):
        prompt = "\n".join(_text(turn) for pair in history for turn in (pair if isinstance(pair, list) else [pair])) \
            + "\n" + prompt
        turns = [(role, _text(turn)) for pair in history if isinstance(pair, list)
                 for role, turn in zip(("user", "assistant"), pair)]
    answer = _text(row.get(columns["response"])) if answered else ""
    # LlamaFactory's AlpacaDatasetConverter: "instruction\ninput" is the last user turn, the system column apart
    query = "\n".join(text for k in ("prompt", "query") if columns.get(k) and (text := _text(row.get(columns[k]))))
    turns += [("user", query), *([("assistant", answer)] if answered else [])]
    system = _text(row.get(columns["system"])) if columns.get("system") else ""
    problems = []
    if not _text(row.get(columns["prompt"])).strip() and not _text(row.get(columns.get("query") or "")).strip():
        problems.append(f"{where}: empty prompt ({columns['prompt']!r} and {columns['query']!r} are empty)")
    if answered and not answer.strip():
        problems.append(f"{where}: empty answer ({columns['response']!r})")
    return Sample(prompt, answer, system=system, turns=tuple(turns)), problems


def _sharegpt(row: dict[str, Any], columns: dict[str, Any], tags: dict[str, str],
              where: str, pairwise: bool = False) -> tuple[Sample | None, list[str]]:
    messages = row.get(columns["messages"])
    if not isinstance(messages, list) or not messages:
        return None, [f"{where}: no messages in column {columns['messages']!r}"]
    role, content = tags["role_tag"], tags["content_tag"]
    system = _text(row.get(columns["system"])) if columns.get("system") else ""
    if messages and isinstance(messages[0], dict) and messages[0].get(role) == tags["system_tag"]:
        system = _text(messages[0].get(content))  # a leading system turn is the system text, as LlamaFactory takes it
        messages = messages[1:]
    asks, answers = (tags["user_tag"], tags["observation_tag"]), (tags["assistant_tag"], tags["function_tag"])
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "observation",
             tags["function_tag"]: "function"}
    prompt, answer, problems = [_text(row.get(columns["system"]))] if columns.get("system") else [], [], []
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or role not in message or content not in message:
            problems.append(f"{where}: message {i} has no {role!r} or {content!r} key")
            continue
        expected = asks if i % 2 == 0 else answers
        if message[role] not in expected:
            problems.append(f"{where}: message {i} has role {message[role]!r}, expected {' or '.join(expected)} "
                            "(turns alternate user, assistant)")
        text = _text(message[content])
        turns.append((roles.get(message[role], "user" if i % 2 == 0 else "assistant"), text))
        if not text.strip():
            problems.append(f"{where}: message {i} ({message[role]}) is empty")
        (prompt if i < len(messages) - 1 or pairwise else answer).append(text)
    if pairwise and not len(messages) % 2:
        problems.append(f"{where}: {len(messages)} messages; a pairwise prompt ends with the user's turn (the answers "
                        f"are in {columns.get('chosen')!r} and {columns.get('rejected')!r})")
    elif not pairwise and len(messages) % 2:
        problems.append(f"{where}: {len(messages)} messages; a conversation ends with the assistant's turn")
    return Sample("\n".join(prompt).strip(), "\n".join(answer), system=system, turns=tuple(turns)), problems


def _media(row: dict[str, Any], column: str | None, where: str) -> tuple[tuple[Any, ...], list[str]]:
    """A row's images/videos column as LlamaFactory reads it (one path or a list of them; a video may be its
    list of frames; {"path": ...} objects): one entry per image or video (a frame list stays one tuple entry);
    embedded bytes are kept as b"" (nothing to look up), anything else is a problem."""
    if not column or row.get(column) is None:
        return (), []
    value = row[column]
    entries: list[Any] = []
    problems = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            item = item.get("path") if isinstance(item.get("path"), str) else (b"" if item.get("bytes") else item)
        if isinstance(item, list) and item and all(isinstance(frame, str) for frame in item):
            entries.append(tuple(item))  # a video given as its frames
        elif isinstance(item, (str, bytes)):
            entries.append(item)
        else:
            problems.append(f"{where}: column {column!r} holds {json.dumps(item, default=str)[:40]}, "
                            "not a file path")
    return tuple(entries), problems


def _answer(value: Any, tags: dict[str, str], sharegpt: bool) -> str | None:
    """A chosen or rejected answer: a string (alpaca), a {role, content} message (sharegpt); None if malformed."""
    if not sharegpt:
        return value if isinstance(value, str) else None
    if isinstance(value, dict) and isinstance(value.get(tags["content_tag"]), str):
        return value[tags["content_tag"]]
    return None


def _pairwise(row: dict[str, Any], columns: dict[str, Any], tags: dict[str, str], where: str,
              sharegpt: bool) -> tuple[Sample | None, list[str]]:
    """A ranking row: the prompt, and the longer of chosen and rejected (LlamaFactory cuts both to one length)."""
    if sharegpt:
        sample, problems = _sharegpt(row, columns, tags, where, pairwise=True)
    else:
        sample, problems = _alpaca(row, columns, where, answered=False)
    if sample is None:
        return None, problems
    answers = []
    for role in ("chosen", "rejected"):
        text = _answer(row.get(columns.get(role) or role), tags, sharegpt)
        if text is None or not text.strip():
            shape = "a {role, content} message" if sharegpt else "a string"
            problems.append(f"{where}: no {role} answer in column {columns.get(role)!r} ({shape})")
        answers.append(text or "")
    longer = max(answers, key=len)
    return dataclasses.replace(sample, answer=longer, turns=(*sample.turns, ("assistant", longer))), problems


def _feedback(row: dict[str, Any], columns: dict[str, Any], tags: dict[str, str], where: str,
              sharegpt: bool) -> tuple[Sample | None, list[str]]:
    """A KTO row: a supervised row whose kto_tag is true or false (anything else is dropped by LlamaFactory)."""
    sample, problems = _sharegpt(row, columns, tags, where) if sharegpt else _alpaca(row, columns, where)
    tag = row.get(columns["kto_tag"])
    if not isinstance(tag, bool):
        problems.append(f"{where}: kto_tag column {columns['kto_tag']!r} is {tag!r}, not true or false (LlamaFactory "
                        "drops the row)")
    return sample, problems


def _plain(row: dict[str, Any], columns: dict[str, Any], where: str) -> tuple[Sample | None, list[str]]:
    """A pre-training row: the text of its prompt column."""
    text = row.get(columns["prompt"])
    if not isinstance(text, str) or not text.strip():
        return None, [f"{where}: no text in column {columns['prompt']!r}"]
    return Sample("", text), []


def samples(name: str, entry: dict[str, Any], dataset_dir: str | Path) -> Iterator[tuple[Sample | None, list[str]]]:
    """Each row of a registered dataset as (sample or None, problems), in file order."""
    entry = checked_entry(name, entry, dataset_dir)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise InputError(f"{name}: formatting {formatting!r} in {Path(dataset_dir) / INFO_FILE}; LlamaFactory knows "
                         "alpaca and sharegpt")
    columns = columns_of(entry)  # once `columns` is given, the ones it leaves out are None (LlamaFactory's parser)
    tags = {**SHAREGPT_TAGS, **(entry.get("tags") or {})}
    kind, sharegpt = kind_of(entry), formatting == "sharegpt"
    for path in data_files(name, entry, dataset_dir):
        for index, row in enumerate(read_records(path)):
            where = f"{path.name} row {index + 1}"
            if not isinstance(row, dict):
                yield None, [f"{where}: a {type(row).__name__}, not an object with columns"]
                continue
            if kind == "pairwise":
                sample, problems = _pairwise(row, columns, tags, where, sharegpt)
            elif kind == "feedback":
                sample, problems = _feedback(row, columns, tags, where, sharegpt)
            elif kind == "text":
                sample, problems = _plain(row, columns, where)
            elif not sharegpt:
                sample, problems = _alpaca(row, columns, where)
            else:
                sample, problems = _sharegpt(row, columns, tags, where)
            if sample is not None and (columns.get("images") or columns.get("videos")):
                images, bad_images = _media(row, columns.get("images"), where)
                videos, bad_videos = _media(row, columns.get("videos"), where)
                sample = dataclasses.replace(sample, images=images, videos=videos, where=where)
                problems = [*problems, *bad_images, *bad_videos]
            yield sample, problems
