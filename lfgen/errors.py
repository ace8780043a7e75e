"""The one error family of lfgen.

Every failure a user can cause is an ``LfgenError``; the CLI turns it into a
single ``Error: ...`` line on stderr and exit code 1 in exactly one place.
A traceback reaching the user is always a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return `` (did you mean: a, b?)`` for close matches of *word*, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
