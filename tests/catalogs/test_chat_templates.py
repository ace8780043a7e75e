"""LlamaFactory's chat templates as lfgen reads them (presets/chat_templates.yaml): the file is the installed
LlamaFactory's, and lfgen's encoding of it gives LlamaFactory's own token counts for every template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lfgen.builder.chat_lengths import Chat, measure, snapshot, template_tokens
from lfgen.builder.data_rows import Sample

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    Sample("what is 1 + 2?", "1 + 2 = 3", turns=(("user", "what is 1 + 2?"), ("assistant", "1 + 2 = 3"))),
    Sample("", "", system="you are a cat", turns=(
        ("user", "hello world"), ("assistant", "<think>\nhm\n</think>\n\nthe cat"), ("user", "and the dog?"),
        ("assistant", "the dog is red."))),
    Sample("", "", turns=(("user", "what color is the sun?"), ("assistant", "red")),),
    Sample("", "", turns=(("user", "look it up"), ("assistant", "calling"), ("observation", "blue"),
                          ("assistant", "it is blue"))),
]


def test_the_template_file_is_the_installed_llamafactorys():
    pytest.importorskip("llamafactory")
    spec = importlib.util.spec_from_file_location("gen_chat_templates", ROOT / "scripts" / "gen_chat_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "presets" / "chat_templates.yaml").read_text(encoding="utf-8") == module.render(), \
        "presets/chat_templates.yaml is stale: run .venv/bin/python scripts/gen_chat_templates.py"


@pytest.mark.parametrize("thinking", [True, False])
def test_lfgens_encoding_counts_what_llamafactorys_own_code_counts(tiny_model, thinking):
    pytest.importorskip("llamafactory")
    differ = {}
    for name in snapshot()["templates"]:
        ours, how = measure(SAMPLES, str(tiny_model), Chat(name, enable_thinking=thinking))
        theirs, their_how = measure(SAMPLES, str(tiny_model), Chat(name, enable_thinking=thinking), own=True)
        assert "snapshot" not in their_how and "its own code" in their_how and "its own code" not in how
        if ours != theirs:
            differ[name] = (ours, theirs)
    assert not differ


def test_the_default_system_prompt_counts_and_a_configs_replaces_it(tiny_model):
    (plain,), _ = measure(SAMPLES[:1], str(tiny_model), Chat("qwen"))
    (mine,), _ = measure(SAMPLES[:1], str(tiny_model), Chat("qwen", default_system="Be brief."))
    (content,), how = measure(SAMPLES[:1], str(tiny_model), Chat(None))
    assert plain - mine > 40 and mine > content and "raw text" in how
    # issue 21: qwen's default system prompt and markers are 65 tokens with the tiny tokenizer
    assert template_tokens("qwen", str(tiny_model))[0] == 65


def test_without_a_tokenizer_the_templates_text_is_approximated():
    (length,), how = measure(SAMPLES[:1], None, Chat("qwen"))
    assert length > 30 and "approximated" in how and "qwen template" in how


def test_an_unknown_template_counts_the_content_and_says_so(tiny_model, monkeypatch):
    import lfgen.builder.chat_lengths as chat_lengths

    monkeypatch.setattr(chat_lengths, "own_available", lambda: False)  # as without LlamaFactory installed
    _, how = measure(SAMPLES[:1], str(tiny_model), Chat("my_custom"))
    assert "content tokens only" in how and "my_custom" in how
