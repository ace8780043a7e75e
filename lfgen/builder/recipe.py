"""The comment header lfgen writes at the top of a config, and reading it back.

``# lfgen-recipe: {...}`` records the base and options a file was built from, so
``lfgen explain FILE`` can rebuild it and tell lfgen's choices from later hand edits.
LlamaFactory ignores comments, so the file stays a plain LlamaFactory config.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import BaseModel, ValidationError

from lfgen.builder.context import Build
from lfgen.builder.options import BuildOptions
from lfgen.layout import GENERATED_PREFIX, RECIPE_PREFIX, header_value



class Recipe(BaseModel):
    lfgen: str
    base: str
    options: dict[str, Any]
    samples: int | None = None
    lengths: dict[str, Any] | None = None  # the data's token lengths (R-DATA-CUTOFF), when they were measured


def command_line(command: str, base: str, options: BuildOptions) -> str:
    """The shell command that builds the same config."""
    argv = ["lfgen", command, base]
    for name, value in options.model_dump(exclude_defaults=True).items():
        flag = "--" + name.replace("_", "-")
        if name == "tokenize_into":
            continue  # lfgen sweep's own setting, not an option
        if name == "set":
            for key, item in value.items():
                argv += ["--set", f"{key}={item}"]
        elif name == "dataset":
            argv += [flag, ",".join(value)]
        else:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(argv)


def header(result: Build, command: str = "preset") -> list[str]:
    from lfgen import __version__

    recipe = Recipe(lfgen=__version__, base=result.base, options=result.options.model_dump(exclude_defaults=True),
                    samples=result.samples, lengths=result.lengths.to_json() if result.lengths is not None else None)
    return [
        f"{GENERATED_PREFIX} {__version__}: {command_line(command, result.base, result.options)}",
        "`lfgen explain <this file>` shows the rule behind every value; the note after each value names it.",
        RECIPE_PREFIX + json.dumps(_dump(recipe), sort_keys=True, ensure_ascii=False, default=str),
    ]


def _dump(recipe: Recipe) -> dict[str, Any]:
    data = recipe.model_dump()
    if data["lengths"] is None:
        del data["lengths"]  # files without measured lengths keep the header they always had
    return data


def read_recipe(text: str) -> Recipe | None:
    """The recipe in a file's leading comments, or None (a file lfgen did not write)."""
    body = header_value(text, RECIPE_PREFIX)
    if body is None:
        return None
    try:
        return Recipe.model_validate(json.loads(body))
    except (json.JSONDecodeError, ValidationError):
        return None
