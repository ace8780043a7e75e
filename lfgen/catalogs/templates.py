"""The model family -> LlamaFactory chat template table (``presets/templates.yaml``, rule LF-TEMPLATE), and
LlamaFactory's multimodal templates (``presets/mm_templates.yaml``: plugin, placeholder tokens, the text around
a prompt and an answer).

The builder picks a template from a model's id or folder name; ``lfgen validate`` asks the other
question: is a config's template known to be wrong for the architecture its local config.json names, and
can it take the images or videos its data holds?
"""

from __future__ import annotations

import functools
import re
from typing import Any

from lfgen.resources import load_data


@functools.cache
def table() -> dict[str, Any]:
    return load_data("templates.yaml")


def template_for(model: str) -> str | None:
    """The template of the first family whose pattern matches *model* (an id, folder name or model_type)."""
    for family in table()["families"]:
        if re.search(family["pattern"], str(model), re.IGNORECASE):
            return family["template"]
    return None


def family_of(name: str) -> str:
    """A template's family: its leading letters (qwen3_nothink -> qwen, llama3 -> llama, gpt_oss -> gpt)."""
    match = re.match(r"[a-z]+", name.lower())
    return match.group(0) if match else name.lower()


def _groups() -> set[str]:
    return {family_of(family["template"]) for family in table()["families"]}


def architecture_family(model_type: str) -> str | None:
    """The family a config.json ``model_type`` belongs to (qwen2 -> qwen, mixtral -> mistral, llama -> llama),
    None when the table does not know it (gpt_neox, starcoder2)."""
    template = template_for(model_type)
    if template is not None:
        return family_of(template)
    group = family_of(model_type)
    rest = model_type.lower()[len(group):]
    return group if group in _groups() and re.fullmatch(r"[\d_.]*", rest) else None


@functools.cache
def _multimodal() -> dict[str, dict[str, Any]]:
    return load_data("mm_templates.yaml")["templates"]


def multimodal(template: str) -> dict[str, Any] | None:
    """LlamaFactory's plugin of *template* and its placeholder tokens, when it takes images, videos or audio."""
    return _multimodal().get(template)


def accepts(template: str, kind: str) -> bool:
    """Whether LlamaFactory's *template* expands the ``<image>``/``<video>``/``<audio>`` placeholder (*kind*:
    image, video, audio); without it any such input fails with "This model does not support image input"."""
    row = multimodal(template)
    return bool(row and row.get(kind))


def wrong_template(template: str, model_type: str) -> str | None:
    """The model's family when *template* is known to be wrong for a *model_type* model, else None.

    Known wrong: the template belongs to a family of the table with an architecture of its own, and
    the model's architecture is another family of the table (qwen2 with llama3). A family that borrows
    architectures (deepseekr1 on qwen2) and templates outside the table are never called wrong.
    """
    known = {family["template"] for family in table()["families"]}
    borrowed = table().get("borrowed_architectures", [])
    if template not in known or any(family_of(template).startswith(b) for b in borrowed):  # deepseekr1: deepseek
        return None
    family = architecture_family(model_type)
    return family if family is not None and family != family_of(template) else None
