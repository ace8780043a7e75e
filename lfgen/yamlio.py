"""Reading and writing config files, the way LlamaFactory reads them.

LlamaFactory loads a YAML with OmegaConf, whose loader differs from plain PyYAML:
``1e-4`` is a float (PyYAML: the string "1e-4"), timestamps stay strings and
duplicate keys are an error. ``load_config`` mirrors that so lfgen sees the values
LlamaFactory will see. Writes are atomic and never replace a file without ``force``; what they
create gets the modes any tool gives under the user's umask (0644 files, 0755 folders under 022).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import yaml

from lfgen.errors import InputError

# OmegaConf's float resolver (omegaconf/_yaml.py), so `1e-4` and `1_000.5` load as floats.
_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _LlamaFactoryLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_LlamaFactoryLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_LlamaFactoryLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _LlamaFactoryLoader.yaml_implicit_resolvers.items()
}


def loads(text: str) -> Any:
    """Parse YAML text as LlamaFactory (OmegaConf) would; safe: no Python objects."""
    return yaml.load(text, Loader=_LlamaFactoryLoader)  # noqa: S506 - a SafeLoader subclass


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` of a YAML parse error (its first line when it has no mark)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def parse_config(text: str, source: str) -> dict[str, Any]:
    """A config mapping from YAML text; one clear InputError when it is not one."""
    try:
        data = loads(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML{describe_yaml_error(exc)}; fix the file's syntax") from None
    if data is None:
        raise InputError(f"{source}: the file is empty; a LlamaFactory config is a mapping of keys to values")
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: the file holds a {type(data).__name__}, not a mapping; a LlamaFactory config is "
            "one flat mapping of keys to values (key: value per line)")
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise InputError(f"{source}: key {bad[0]!r} is not a string; quote it or fix the line")
    return data


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what}; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None


def read_json_object(path: str | os.PathLike[str], where: str, fix: str, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file that must hold an object (config.json, dataset_info.json); one InputError otherwise."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: must hold {what}; {fix}")
    return data


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one config file; missing, malformed or non-mapping files raise one InputError."""
    return parse_config(read_text(path, "config file"), str(path))


def write_new(path: str | os.PathLike[str], text: str | bytes, *, force: bool = False, option: str = "-o") -> Path:
    """Write *text* (or bytes) to *path* atomically; refuse to replace an existing file unless *force*."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option}: {path} is a directory; give a file name")
    if path.exists() and not force:
        raise InputError(f"{option}: {path} already exists; pass --force to overwrite it")
    return write_atomic(path, text)


def _fresh_name(parent: Path, name: str) -> Path:
    return parent / f".{name}.{secrets.token_hex(4)}.tmp"


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write *path* through a temporary file and one rename: readers see the old file or the new one.

    The file is created with mode 0666 less the umask, like ``open(path, "w")`` (mkstemp would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _fresh_name(path.parent, path.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replace_dir(target: str | os.PathLike[str], files: dict[str, str]) -> Path:
    """Make folder *target* hold exactly *files* ({relative path: text}), swapped in by rename: an error
    leaves the old folder as it was. Folders get 0777 less the umask, files 0666 less it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        staging = _fresh_name(target.parent, target.name)
        try:
            staging.mkdir(0o777)
            break
        except FileExistsError:
            continue
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if target.exists():
            old = _fresh_name(target.parent, f"{target.name}.old")
            target.rename(old)
            try:
                staging.rename(target)
            except BaseException:
                old.rename(target)
                raise
            shutil.rmtree(old)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
