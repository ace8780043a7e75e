"""Reading and writing config files, the way LlamaFactory reads them.

LlamaFactory loads a YAML with OmegaConf, whose loader differs from plain PyYAML:
``1e-4`` is a float (PyYAML: the string "1e-4"), timestamps stay strings and
duplicate keys are an error. ``load_config`` mirrors that so lfgen sees the values
LlamaFactory will see. Writes are atomic and never replace a file without ``force``; what they
create gets the modes any tool gives under the user's umask (0644 files, 0755 folders under 022).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from lfgen.errors import InputError, short_path

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


MAX_NODES = 100_000  # values in one YAML document, aliases expanded: a config has hundreds, an alias bomb billions


def _expanded_size(root: yaml.Node) -> int:
    """How many values *root* stands for with every alias expanded, stopping past MAX_NODES.

    PyYAML shares an aliased value instead of copying it, so loading a "billion laughs" file is cheap; it is
    whatever walks the result later (validation, JSON, a copy) that expands it until memory runs out.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            children = _children(node)
            sizes[key] = min(MAX_NODES + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to itself (a recursive value)",
                                                    node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _LlamaFactoryLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"its aliases expand to more than {MAX_NODES:,} values (an alias bomb?); "
                "write the values out", node.start_mark)
        return self.construct_document(node)

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


def path_problem(exc: OSError) -> str:
    """Why a path cannot be used, in words: too long, a file where a folder should be, no permission."""
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long (a name may have at most 255 bytes); use a shorter name"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder; check the path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission ({exc.strerror}); choose a folder you can write to"
    if exc.errno == errno.ENOSPC:
        return "the disk is full; free space or choose another folder"
    return exc.strerror or str(exc)


def open_regular(path: str | os.PathLike[str], what: str = "file") -> BinaryIO:
    """*path* open for reading (binary), refused with one InputError when it is missing, a folder, not a regular
    file or unreadable. A FIFO would block the open itself and a device (``/dev/zero``) would never end, so the
    file is opened without blocking and checked on the open descriptor: one swapped in after a check is caught too."""
    path = Path(path)
    try:
        _check_names(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(f"{short_path(path)}: no such {what}; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise InputError(f"{short_path(path)}: no such {what}; a part of the path is a file, not a folder") from None
        raise InputError(f"{short_path(path)}: cannot be read: {path_problem(exc)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"{path}: is a directory, not a {what}")
        raise InputError(f"{path}: is not a regular file (a FIFO, socket or device); give a {what} on disk")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """A UTF-8 text file (newlines as Python reads text), refused with one InputError when it is missing, not a
    regular file (``open_regular``), unreadable or not UTF-8."""
    import io

    with open_regular(path, what) as handle:
        try:
            return io.TextIOWrapper(handle, encoding="utf-8").read()
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a UTF-8 text file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror})") from None


def parse_json(text: str, where: str, fix: str) -> Any:
    """JSON text with the limits YAML has (libyaml stops at 1,000 levels of nesting): deeper nesting than Python
    parses and a number over Python's 4,300 digits are one InputError, like a syntax error."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{where}: nested too deeply (brackets more than ~1,000 levels deep); {fix}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc}); {fix}") from None
    except ValueError as exc:  # the one other: an integer longer than Python converts
        raise InputError(f"{where}: not valid JSON ({str(exc).split(';')[0]}); {fix}") from None


def read_json_object(path: str | os.PathLike[str], where: str, fix: str, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file that must hold an object (config.json, dataset_info.json); one InputError otherwise."""
    data = parse_json(read_text(path, "JSON file"), where, fix)
    if not isinstance(data, dict):
        raise InputError(f"{where}: must hold {what}; {fix}")
    return data


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one config file; missing, malformed or non-mapping files raise one InputError."""
    return parse_config(read_text(path, "config file"), str(path))


NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows file systems


def _check_names(path: Path) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))


def check_path(path: str | os.PathLike[str], option: str | None = None) -> Path:
    """Refuse, before any work, a path no file system holds (a name over 255 bytes): the first look at it would
    raise ENAMETOOLONG. One InputError naming *option* and the path; creates and reads nothing."""
    path = Path(path)
    try:
        _check_names(path)
    except OSError as exc:
        where = f"{option}: {short_path(path)}" if option else short_path(path)
        raise InputError(f"{where}: {path_problem(exc)}") from None
    return path


def make_parents(path: Path) -> list[Path]:
    """Create the folders above *path*; the ones created, outermost first. A failure removes them again,
    so a refused path leaves nothing behind. A file standing where a folder should be is ENOTDIR."""
    _check_names(path)
    missing = []
    for parent in path.parents:
        if parent.is_dir():
            break
        if parent.exists() or parent.is_symlink():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
        missing.append(parent)
    created = []
    try:
        for parent in reversed(missing):
            parent.mkdir(0o777)
            created.append(parent)
    except BaseException:
        remove_empty(created)
        raise
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove *folders* (outermost first, as make_parents returns them) that are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def cannot_write(path: str | os.PathLike[str], exc: OSError, option: str | None = None) -> InputError:
    """The one line for a file or folder lfgen could not write: the option, the path, why, the fix."""
    where = f"{option}: {short_path(path)}" if option else short_path(path)
    return InputError(f"{where}: cannot be written: {path_problem(exc)}")


def check_can_write(path: str | os.PathLike[str], option: str | None = None) -> Path:
    """Refuse, before any work, a file or folder that cannot be created at *path*: a name too long, a file
    where a folder should be, a folder that is not writable. Creates nothing."""
    path = Path(path)
    try:
        _check_names(path)
        if path.exists() and not path.is_dir() and option in _FOLDER_OPTIONS:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        for parent in path.parents:
            if parent.is_dir():
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(parent))
                break
            if parent.exists() or parent.is_symlink():
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    except OSError as exc:
        raise cannot_write(path, exc, option) from None
    return path


_FOLDER_OPTIONS = ("--experiments-dir", "--outputs-dir", "--export-dir", "DIRECTORY")


def write_new(path: str | os.PathLike[str], text: str | bytes, *, force: bool = False, option: str = "-o") -> Path:
    """Write *text* (or bytes) to *path* atomically; refuse to replace an existing file unless *force*.
    A path that cannot be written (read-only, too long, under a file) is one InputError naming *option*."""
    path = Path(path)
    try:
        _check_names(path)
        if path.is_dir():
            raise InputError(f"{option}: {path} is a directory; give a file name")
        if (path.exists() or path.is_symlink()) and not force:  # a dangling link is the user's too
            what = "is a symbolic link" if path.is_symlink() and not path.exists() else "already exists"
            raise InputError(f"{option}: {path} {what}; pass --force to overwrite it")
        return write_atomic(path, text)
    except OSError as exc:
        raise cannot_write(path, exc, option) from None


def _fresh_name(parent: Path, name: str) -> Path:
    return parent / f".{name[:NAME_MAX - 32]}.{secrets.token_hex(4)}.tmp"


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write *path* through a temporary file and one rename: readers see the old file or the new one.

    The file is created with mode 0666 less the umask, like ``open(path, "w")`` (mkstemp would make it 0600).
    Folders it had to create are removed again when the write fails.
    """
    path = Path(path)
    created = make_parents(path)
    try:
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
    except BaseException:
        remove_empty(created)
        raise
    return path


def replace_dir(target: str | os.PathLike[str], files: dict[str, str]) -> Path:
    """Make folder *target* hold exactly *files* ({relative path: text}), swapped in by rename: an error
    leaves the old folder as it was. Folders get 0777 less the umask, files 0666 less it."""
    target = Path(target)
    try:
        created = make_parents(target)
    except OSError as exc:
        raise cannot_write(target, exc) from None
    try:
        return _replace_dir(target, files)
    except OSError as exc:
        remove_empty(created)
        raise cannot_write(target, exc) from None
    except BaseException:
        remove_empty(created)
        raise


def _replace_dir(target: Path, files: dict[str, str]) -> Path:
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
