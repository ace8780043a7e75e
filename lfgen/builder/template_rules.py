"""The chat template (LF-TEMPLATE) from the model's id, or from a local model's own files (config.json's model_type and
architectures, the tokenizer's chat template), and R-TEMPLATE-BASE: a base checkpoint under a chat template it never
learned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lfgen.builder.context import Context
from lfgen.catalogs import rules


@dataclass(frozen=True)
class LocalModel:
    """What a local model folder says about its chat format."""

    folder: Path
    model_type: str | None
    architectures: tuple[str, ...]
    chat_template: str | None  # the tokenizer's own (tokenizer_config.json, or chat_template.jinja / .json)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return {}  # a broken or missing file: the model lookup reports it where it matters
    return data if isinstance(data, dict) else {}


def local_model(model: str) -> LocalModel | None:
    """The folder's chat-format facts, or None when *model* is not a local folder."""
    from lfgen.builder.model import looks_local

    folder = Path(model).expanduser()
    try:
        if not (looks_local(model) and folder.is_dir()):
            return None
    except OSError:
        return None
    config = _json(folder / "config.json")
    chat = _json(folder / "tokenizer_config.json").get("chat_template")
    for name in ("chat_template.jinja", "chat_template.json"):
        if chat is None and (folder / name).is_file():
            try:
                text = (folder / name).read_text(encoding="utf-8")
            except OSError:
                continue
            chat = _json(folder / name).get("chat_template") if name.endswith(".json") else text
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    return LocalModel(folder, model_type, tuple(str(a) for a in archs),
                      chat if isinstance(chat, str) and chat.strip() else None)


def template_of(model: str) -> tuple[str | None, str]:
    """LlamaFactory's template for *model* and how lfgen knows it (None: no family matches)."""
    from lfgen.catalogs.templates import table, template_for, wrong_template

    name = Path(str(model).rstrip("/")).name or str(model)
    local = local_model(model)
    by_name = template_for(name if local is not None else model)
    if local is None:
        return by_name, f"{model} is a {by_name}-template model" if by_name else ""
    by_type = next((found for found in (template_for(local.model_type or ""), *map(template_for, local.architectures))
                    if found), None) if local.model_type or local.architectures else None
    if by_name and (local.model_type is None or not wrong_template(by_name, local.model_type)):
        return by_name, f"{model}: its folder name is a {by_name}-template model"
    if by_type:
        return by_type, f"{model}: its config.json says model_type {local.model_type or local.architectures[0]}, " \
                        f"a {by_type}-template model"
    for row in table().get("chat_markers", []):
        if local.chat_template and row["marker"] in local.chat_template:
            return row["template"], f"{model}: its tokenizer's chat template uses {row['marker']}"
    return None, ""


def template(ctx: Context) -> None:
    """LF-TEMPLATE, then R-TEMPLATE-BASE's warning."""
    from lfgen.catalogs.templates import table

    if not ctx.shape.applies("LF-TEMPLATE"):
        return  # pre-training reads raw text (R-STAGE-PT)
    model = str(ctx.get("model_name_or_path", ""))
    found, how = template_of(model)
    if found is not None:
        ctx.choose("template", found, "LF-TEMPLATE", how)
    else:
        ctx.choose("template", table()["fallback"], "LF-TEMPLATE",
                   f"no family known for {model}; LlamaFactory's generic template")
        if "template" not in ctx.fixed:
            ctx.warn("LF-TEMPLATE", f"no chat template known for {model!r}; wrote template: default, pass --template "
                                    "NAME (see LlamaFactory's supported models table)")
    _base_checkpoint(ctx, model, str(ctx.get("template", "")))


def base_checkpoint(model: str) -> str | None:
    """Why *model* is a base (pre-trained only) checkpoint, or None when it is, or may be, a chat model."""
    spec = rules.rule("R-TEMPLATE-BASE")
    name = Path(str(model).rstrip("/")).name
    if re.search(spec.table("chat_names"), name, re.IGNORECASE):
        return None
    if re.search(spec.table("base_names"), name, re.IGNORECASE):
        return f"its name says base ({name})"
    local = local_model(model)
    if local is not None:
        if local.chat_template is None:
            return "its tokenizer has no chat template"
        return None  # a folder with a chat template and no marker in its name: lfgen cannot tell
    from lfgen.models.catalog import catalog_entry

    if catalog_entry(model) is not None:
        return "its id has no Instruct, Chat or -it, as its family's chat checkpoints do"
    return None


def _base_checkpoint(ctx: Context, model: str, template_name: str) -> None:
    spec = rules.rule("R-TEMPLATE-BASE")
    if template_name in spec.table("plain_templates") or not template_name:
        return
    why = base_checkpoint(model)
    if why is None:
        return
    family = template_name.rstrip("0123456789_").rstrip("_") or template_name
    tokens = spec.table("untrained_tokens").get(template_name) or spec.table("untrained_tokens").get(family)
    risk = (f"its special tokens {tokens} were never trained, so the tuned model often never stops generating"
            if tokens else "a chat markup it never saw in pre-training: it learns it only from your data")
    ctx.warn("R-TEMPLATE-BASE", f"{model} looks like a base checkpoint ({why}), and template {template_name} is a chat "
                                f"format: {risk}; use --template default (what LlamaFactory's maintainer advises for "
                                "base models, LlamaFactory #5599) or train the instruct checkpoint")
