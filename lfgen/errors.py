"""The one error family of lfgen.

Every failure a user can cause is an ``LfgenError``; the CLI turns it into a
single ``Error: ...`` line on stderr and exit code 1 in exactly one place.
A traceback reaching the user is always a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic loads only when a ValidationError is rendered
    from pydantic import ValidationError


INSTALL_HINT = "pip install 'lfgen[train]'"  # how to get LlamaFactory and the training stack


class LfgenError(Exception):
    """Root of every error lfgen raises on purpose."""


class InputError(LfgenError):
    """A value given by the user (option, file, name) is wrong; the message says how to fix it."""


class FilterError(InputError):
    """A ``--filter`` condition is malformed; the CLI reports it as a usage error (exit 2)."""


class ProblemsFound(LfgenError):
    """Validation found problems; each one is a line of the message."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class RunError(LfgenError):
    """A process lfgen started (training, export, the LlamaFactory probe) failed."""


class StateError(LfgenError):
    """A file lfgen keeps its state in (experiment.yaml, state.sqlite, calibration.json) is broken; the
    message names the file and how to rebuild it. lfgen never overwrites such a file."""


def short_path(path: object, limit: int = 80) -> str:
    """*path* as text for a message line, its middle cut when it is longer than *limit* characters."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return `` (did you mean: a, b?)`` for close matches of *word*, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


_MESSAGES = (("Input should be", "must be"), ("String should have", "must have"))
_TYPE_WORDS = (("a valid number", "a number"), ("a valid integer", "an integer"),
               ("a valid boolean", "true or false"), ("a valid string", "a string"),
               ("a valid dictionary", "a mapping"), ("a valid list", "a list"))
_MAX_SHOWN = 60  # a whole mapping as the "got" value would swamp the line


def _shown(value: Any) -> str:
    text = f"'{value}'" if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validation_problems(exc: ValidationError, *, name: Callable[[tuple[Any, ...]], str] = _dotted,
                        missing: str = "required", one_per_field: bool = False) -> list[str]:
    """A pydantic ValidationError as one line per field path: ``path: what is wrong (got value)``.

    *name* turns an error's location into the path shown (a CLI option, a dotted key); *missing* is said
    of a required field that is absent; *one_per_field* keeps the first line per top-level field (a union
    field reports each branch it tried).
    """
    lines, seen = [], set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        if one_per_field:
            if loc[:1] in seen:
                continue
            seen.add(loc[:1])
        path = name(loc)
        if err["type"] == "missing":
            lines.append(f"{path}: {missing}")
            continue
        message = err["msg"]
        for old, new in _MESSAGES:
            message = message.replace(old, new)
        if err["type"].endswith(("_type", "_parsing")) and "union" not in err["type"]:
            for old, new in _TYPE_WORDS:
                message = message.replace(old, new)
        lines.append(f"{path}: {message} (got {_shown(err.get('input'))})")
    return lines


def describe_validation(exc: ValidationError, source: str, **how: Any) -> str:
    """One line for a message: ``source: path: problem; path: problem`` (see validation_problems)."""
    return f"{source}: " + "; ".join(validation_problems(exc, **how))
