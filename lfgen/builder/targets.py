"""R-TARGET: the one place a target set (qv, attn, mlp, all) or module names become ``lora_target``."""

from __future__ import annotations

import re
from typing import Any

from lfgen.catalogs import rules
from lfgen.errors import InputError

_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def resolve_target(value: str, model: Any = None) -> tuple[str, str, tuple[str, ...]]:
    """R-TARGET: an abstract set (qv, attn, mlp, all) or module names -> (lora_target, how, notes).

    With a known *model* the sets map to its real module names (q_proj on Llama, query_key_value on
    GPT-NeoX, qkv_proj on Phi-3) and explicit names are checked against it; without one the sets are
    written as Llama/Qwen names.
    """
    names = [n.strip() for n in value.split(",")]
    if not names or any(not _MODULE_NAME.match(n) for n in names):
        raise InputError(f"--target: {value!r} is not a module list; use qv, attn, mlp, all or names like "
                         "q_proj,v_proj")
    if value == "all":  # LlamaFactory's own `all` is right on every architecture
        return "all", "'all' = every linear layer (LlamaFactory's own `all`)", ()
    model = model() if callable(model) else model
    if model is not None:
        written, real, notes = on_model(model, value)
        return written, f"'{value}' = {', '.join(real)} on {model}", notes
    sets = rules.rule("R-TARGET").table("sets")
    if value in sets:
        return sets[value], f"'{value}' = {sets[value]}", ()
    return ",".join(names), "module names as given", ()



def on_model(model: str, target: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(lora_target to write, the real module names, notes) for one model; names are checked."""
    from lfgen.builder.model import inventory_of
    from lfgen.models import resolve_targets

    resolved = resolve_targets(inventory_of(model), target)
    names = model_order(model, resolved.names)
    written = "all" if target == "all" else ",".join(names)
    return written, names, tuple(resolved.notes)


def model_order(model: str, names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Module names in the order the model runs them (q, k, v, o, gate, up, down), not alphabetical."""
    from lfgen.builder.model import inventory_of

    order = {name: i for i, name in enumerate(dict.fromkeys(g.name for g in inventory_of(model).groups))}
    return tuple(sorted(names, key=lambda n: order.get(n, len(order))))
