"""``BuildOptions``, the validated form of what a user asks a build for, and ``--set key=value``.

Generated from the one option table (``lfgen.builder.option_table``), as the CLI's options are; the
option <-> LlamaFactory-key map lives there too.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from lfgen.builder.option_table import GRID_OPTIONS, OPTION_KEYS, OPTIONS, SET_HELP, Option  # noqa: F401
from lfgen.errors import InputError, validation_problems

_COMMENT = re.compile(r"(^|\s)#")  # where YAML starts a comment


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, **values: Any) -> BuildOptions:
        """Validate options; errors name the CLI option, the value and what is allowed."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise InputError("; ".join(validation_problems(exc, name=_option_name))) from None


def _option_name(loc: tuple[Any, ...]) -> str:
    return "--" + str(loc[0]).replace("_", "-") if loc else "options"


def _field(option: Option) -> tuple[Any, Any]:
    kind: Any = list[option.type] if option.many else option.type
    if option.choices:
        kind = Literal[option.choices]  # type: ignore[valid-type]
    if option.default is None:
        kind = kind | None
    return kind, Field(default=option.default, description=option.help, **(option.constraints or {}))


# What a user can ask for; field names are the CLI options (``--gpu-mem`` is ``gpu_mem``).
BuildOptions = create_model("BuildOptions", __base__=_Options, __module__=__name__,
                            **{o.name: _field(o) for o in OPTIONS},
                            set=(dict[str, Any], Field(default={}, description=SET_HELP)),
                            # Not a CLI option: lfgen sweep and tune set it, so a sweep's runs share tokenized data.
                            tokenize_into=(str | None, Field(default=None, description="the sweep's outputs folder")))


# YAML 1.1's other spellings of true and false: for a key LlamaFactory types as a string they are the string
_YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars the way LlamaFactory's loader reads them."""
    from lfgen.catalogs.llamafactory import snapshot
    from lfgen.yamlio import loads

    catalog = snapshot()
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set: {item!r} is not key=value; write it as --set key=value (e.g. --set seed=7)")
        spec = catalog.check_key(key)
        try:
            value = loads(raw) if raw.strip() else ""
        except Exception:  # noqa: BLE001 - any YAML error means: take the text as it is
            value = raw
        if isinstance(value, bool) and spec.type == "str" and raw.strip().lower() in _YAML11_BOOLEANS:
            value = raw.strip()  # `eval_strategy=no` means the string: YAML 1.1 would read false
        if _COMMENT.search(raw):  # `run_name=exp #3`: YAML would read a comment and drop the #3
            value = raw
        if isinstance(value, (dict, list)) and key not in ("report_to",):
            value = raw
        parsed[key] = value
    return parsed

