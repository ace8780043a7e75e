"""Token lengths of samples as LlamaFactory encodes them: through the chat template it will apply, its prefix and
system prompt included (``Template._encode`` per turn, ``encode_multiturn`` summed as its supervised processor sums
them, one more EOS for an efficient-EOS template).

Two engines give the same counts:

* LlamaFactory's own template code (``llamafactory.data.template``), imported lazily where it is installed in lfgen's
  Python and the caller accepts the import (``lfgen data``: it loads torch and transformers, seconds);
* ``presets/chat_templates.yaml``, the snapshot of its templates (scripts/gen_chat_templates.py), encoded here as
  ``Template._encode`` does, with the model's tokenizer batched in Rust: the builder's R-DATA-CUTOFF and with it the
  memory and time estimates, where an import of seconds at every ``lfgen preset`` is not acceptable.
  tests/catalogs/test_chat_templates.py checks the snapshot against the installed LlamaFactory and both engines
  against each other on every template.

Without a tokenizer (a hub id, a folder without tokenizer files) the template's text is counted with the stated
approximation, like the content. A template the snapshot does not know is counted by LlamaFactory's code where it is
installed; else the content alone, and the method says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lfgen.builder.data_lengths import Tokens, tokens
from lfgen.builder.data_rows import Sample
from lfgen.resources import load_data

_BATCH = 2000  # strings per tokenizer call (as data_lengths)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Chat:
    """How LlamaFactory wraps a sample: its ``template`` (None: raw text, pre-training), the config's
    ``default_system`` (replaces the template's) and ``enable_thinking`` (a reasoning template's empty thought)."""

    template: str | None
    default_system: str | None = None
    enable_thinking: bool | None = True

    @classmethod
    def of(cls, config: dict[str, Any]) -> Chat:
        """The chat settings a LlamaFactory config trains with."""
        system = config.get("default_system")
        thinking = config.get("enable_thinking", True)
        return cls(config.get("template"), system if isinstance(system, str) else None,
                   thinking if isinstance(thinking, bool) or thinking is None else True)


@functools.cache
def snapshot() -> dict[str, Any]:
    return load_data("chat_templates.yaml")


def known(template: str) -> bool:
    return template in snapshot()["templates"]


def turns_of(sample: Sample) -> list[tuple[str, str]]:
    """The (role, content) turns LlamaFactory's converter makes of *sample* (a bare prompt/answer pair else)."""
    return list(sample.turns) or [("user", sample.prompt), ("assistant", sample.answer)]


# --- the snapshot engine: Template._encode on presets/chat_templates.yaml ----------------------------


def _apply(slots: list[Any], **values: str) -> list[Any]:
    """StringFormatter.apply: each placeholder of a string slot replaced once, other slots as they are."""
    out = []
    for slot in slots:
        if isinstance(slot, str):
            for name, value in values.items():
                slot = slot.replace("{{" + name + "}}", value, 1)
        out.append(slot)
    return out


def _remove_thought(spec: dict[str, Any], content: str) -> str:
    start, end = spec["thought"]
    return re.sub(f"{re.escape(start)}(.*?){re.escape(end)}", "", content, flags=re.DOTALL).lstrip("\n")


def _turn_elements(spec: dict[str, Any], sample: Sample, chat: Chat) -> list[list[Any]]:
    """The elements LlamaFactory converts to ids for each turn of *sample*, in order (an empty thought as a string,
    an efficient EOS at the end of the last turn)."""
    system = sample.system or (chat.default_system if chat.default_system is not None else spec["default_system"])
    turns = turns_of(sample)
    reasoning = spec["class"] in ("reasoning", "glm47_reasoning")
    if reasoning and chat.enable_thinking is False:  # encode_multiturn removes every thought first
        turns = [(role, _remove_thought(spec, text) if i % 2 else text) for i, (role, text) in enumerate(turns)]
    encoded: list[list[Any]] = []
    for i, (role, content) in enumerate(turns):
        elements: list[Any] = []
        system_text = ""
        if i == 0:
            elements += spec["prefix"]
            if system:
                formatted = _apply(spec["system"], content=system)
                if spec["class"] == "llama2":  # Llama2Template: the system text joins the first user message
                    system_text = formatted[0] if isinstance(formatted[0], str) else ""
                else:
                    elements += formatted
        if role == "user":
            extra = {} if spec["class"] == "llama2" else {"idx": str(i // 2)}
            elements += _apply(spec["user"], content=system_text + content, **extra)
        elif role == "observation":
            elements += _apply(spec["observation"], content=content)
        else:  # assistant; a function call is formatted by its tool format, counted here as an answer
            elements += _apply(spec["assistant"], content=content)
        if reasoning and i % 2 and not any(word.strip() in content for word in spec["thought"]):
            # ReasoningTemplate.encode_multiturn: an answer without a thought gets the empty one
            elements.append(spec["thought"][1] if spec["class"] == "glm47_reasoning"
                            else spec["thought"][0] + spec["thought"][1])
        encoded.append(elements)
    if spec["efficient_eos"] and encoded:
        encoded[-1].append({"special": "eos"})
    return encoded


def _ids(element: dict[str, Any], counter: Tokens) -> int:
    """Ids of a non-string slot: one for a {token}, one for an EOS (the tokenizer always has one after the
    template's fix), one for a BOS when the tokenizer has one; none for any other set."""
    special = element.get("special")
    return 1 if "token" in element or special == "eos" or (special == "bos" and counter.bos) else 0


def _snapshot_lengths(samples: Sequence[Sample], spec: dict[str, Any], chat: Chat, counter: Tokens,
                      progress: Progress | None) -> list[int]:
    """Each sample's tokens: its strings tokenized one by one as LlamaFactory does (each distinct string once, in
    batches), plus one token per token slot and per BOS / EOS slot the tokenizer has."""
    counter.add_special(list(spec["stop_words"]))  # fix_special_tokens makes every stop word a special token
    fixed, strings = [], []
    for sample in samples:
        count, texts = 0, []
        for element in (e for turn in _turn_elements(spec, sample, chat) for e in turn):
            if isinstance(element, str):
                if element:
                    texts.append(element)
            else:
                count += _ids(element, counter)
        fixed.append(count)
        strings.append(texts)
    distinct = list(dict.fromkeys(text for texts in strings for text in texts))
    counted: dict[str, int] = {}
    for start in range(0, len(distinct), _BATCH):
        batch = distinct[start:start + _BATCH]
        counted.update(zip(batch, counter.count(batch)))
        if progress is not None:
            progress(len(batch))
    return [count + sum(counted[text] for text in texts) for count, texts in zip(fixed, strings)]


# --- LlamaFactory's own template code ---------------------------------------------------------------


def own_available() -> bool:
    """Whether LlamaFactory is importable in lfgen's own Python (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llamafactory") is not None


def _own_lengths(samples: Sequence[Sample], model: str, chat: Chat, progress: Progress | None) -> list[int]:
    """Each sample's tokens by LlamaFactory's get_template_and_fix_tokenizer and encode_multiturn."""
    import copy
    import logging

    from transformers import AutoTokenizer

    from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    logging.getLogger("llamafactory").setLevel(logging.ERROR)  # its "Add pad token" notes are not lfgen's output
    tokenizer = AutoTokenizer.from_pretrained(model, use_fast=True, split_special_tokens=False, padding_side="right")
    kept = copy.deepcopy(TEMPLATES[chat.template])  # get_template_and_fix_tokenizer sets the shared template's fields
    try:
        template = get_template_and_fix_tokenizer(tokenizer, DataArguments(
            template=chat.template, default_system=chat.default_system, enable_thinking=chat.enable_thinking))
        lengths = []
        for i, sample in enumerate(samples):
            messages = [{"role": role, "content": text} for role, text in turns_of(sample)]
            pairs = template.encode_multiturn(tokenizer, messages, sample.system or None, None)
            lengths.append(sum(len(a) + len(b) for a, b in pairs) + (1 if template.efficient_eos else 0))
            if progress is not None and (i + 1) % _BATCH == 0:
                progress(_BATCH)
    finally:
        TEMPLATES[chat.template] = kept
    return lengths


def _llamafactory_version() -> str:
    return str(snapshot()["llamafactory"])


# --- what callers use -------------------------------------------------------------------------------


def measure(samples: Sequence[Sample], model: str | None, chat: Chat, *, own: bool = False,
            progress: Progress | None = None) -> tuple[list[int], str]:
    """Token length of every sample as LlamaFactory will train on it, in order, and how they were counted. *own*:
    LlamaFactory's own template code where it is installed here (an import of seconds); else the snapshot."""
    counter = tokens(model)
    template = chat.template
    if template is None:  # pre-training: the raw text
        lengths = counter.count([s.answer if not s.prompt else s.text for s in samples])
        return lengths, f"{counter.method} (raw text, no chat template)"
    if counter.exact and (own or not known(template)) and own_available():
        import llamafactory

        try:
            lengths = _own_lengths(samples, str(model), chat, progress)
        except (ValueError, KeyError, OSError) as exc:  # a template it does not know either, a broken tokenizer
            return _content(samples, counter, f"{template}: {exc}")
        return lengths, (f"{counter.method} through LlamaFactory {llamafactory.__version__}'s {template} template (its "
                         "own code), system prompt included")
    if not known(template):
        return _content(samples, counter, f"template {template!r} is not one of LlamaFactory "
                                          f"{_llamafactory_version()}'s")
    spec = snapshot()["templates"][template]
    lengths = _snapshot_lengths(samples, spec, chat, counter, progress)
    how = "LlamaFactory's template text" if not counter.exact else "LlamaFactory's template"
    return lengths, (f"{counter.method} through the {template} template ({how}, {_llamafactory_version()}), "
                     "system prompt included")


def content(samples: Sequence[Sample], model: str | None, why: str) -> tuple[list[int], str]:
    """Content tokens only (no template known), and the method saying *why*."""
    return _content(samples, tokens(model), why)


def _content(samples: Sequence[Sample], counter: Tokens, why: str) -> tuple[list[int], str]:
    lengths = counter.count([s.text for s in samples])
    return lengths, f"{counter.method} (content tokens only: {why}; the chat template adds its own)"


def template_tokens(template: str | None, model: str | None) -> tuple[int, int, int]:
    """Tokens turn 0 of *template* adds with *model*'s tokenizer: before the prompt (prefix, default system, the
    user header), after it, and around the answer (an empty thought of a reasoning template too). For rows whose
    prompt is cut at a position (an image span, lfgen.builder.data_media)."""
    if not template or not known(template):
        return 0, 0, 0
    spec, counter = snapshot()["templates"][template], tokens(model)
    marker_prompt, marker_answer = "\x00lfgen-prompt\x00", "\x00lfgen-answer\x00"
    counter.add_special(list(spec["stop_words"]))
    prompt, answer = _turn_elements(spec, Sample(marker_prompt, marker_answer), Chat(template))

    def count(items: list[Any]) -> int:
        texts = [item for item in items if isinstance(item, str) and item]
        specials = sum(_ids(item, counter) for item in items if not isinstance(item, str))
        return (sum(counter.count(texts)) if texts else 0) + specials

    def around(items: list[Any], marker: str) -> tuple[list[Any], list[Any]]:
        at = next(i for i, item in enumerate(items) if isinstance(item, str) and marker in item)
        head, _, tail = items[at].partition(marker)
        return [*items[:at], head], [tail, *items[at + 1:]]

    before, after = around(prompt, marker_prompt)
    return count(before), count(after), count([part for part in around(answer, marker_answer) for part in part])
