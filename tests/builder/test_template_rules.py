"""LF-TEMPLATE from a local model's own files (issue 21 item 8) and R-TEMPLATE-BASE (issue 20)."""

from __future__ import annotations

import json

import pytest

from lfgen import BuildOptions, build
from lfgen.builder.template_rules import base_checkpoint, template_of

QWEN2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}


def _folder(root, name, config, chat=None, chat_file=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat} if chat else {}))
    if chat_file:
        (folder / "chat_template.jinja").write_text(chat_file)
    return str(folder)


def test_the_tiny_model_is_qwen_from_its_config_json(tmp_path):
    """Issue 21 item 8: the tiny test model (model_type qwen2, folder tiny-model) got `default`."""
    model = _folder(tmp_path, "tiny-model", QWEN2, chat_file="{{ '<|im_start|>' }}")
    assert template_of(model) == ("qwen", f"{model}: its config.json says model_type qwen2, a qwen-template model")
    result = build("lightweight", BuildOptions.parse(model=model))
    assert result.config["template"] == "qwen" and not any(w.startswith("LF-TEMPLATE") for w in result.warnings)


def test_a_folder_name_says_more_than_model_type_unless_it_contradicts_it(tmp_path):
    named = _folder(tmp_path, "Qwen3-4B-Instruct-2507", {**QWEN2, "model_type": "qwen3"})
    assert template_of(named)[0] == "qwen3_nothink"  # the name knows the variant, model_type only the family
    wrong = _folder(tmp_path, "my-llama3-finetune", QWEN2)
    assert template_of(wrong)[0] == "qwen"  # a qwen2 model named llama3: config.json wins


def test_the_tokenizers_own_chat_template_decides_when_nothing_else_does(tmp_path):
    custom = _folder(tmp_path, "custom", {"model_type": "gpt_neox"}, chat="<|im_start|>{{ m }}<|im_end|>")
    assert template_of(custom) == ("chatml", f"{custom}: its tokenizer's chat template uses <|im_start|>")
    assert template_of(_folder(tmp_path, "bare", {"model_type": "gpt_neox"})) == (None, "")


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen3-8B-Base",
                                   "google/gemma-2-9b"])
def test_a_base_checkpoint_under_a_chat_template_gets_the_fix(model):
    result = build("lightweight", BuildOptions.parse(model=model))
    (warning,) = [w for w in result.warnings if w.startswith("R-TEMPLATE-BASE")]
    assert "looks like a base checkpoint" in warning and "--template default" in warning
    assert "instruct checkpoint" in warning and "#5599" in warning
    if "Llama-3" in model:
        assert "<|eot_id|>" in warning and "never stops" in warning  # the tokens it never learned
    plain = build("lightweight", BuildOptions.parse(model=model, template="default"))
    assert not any(w.startswith("R-TEMPLATE-BASE") for w in plain.warnings)


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-8B",
                                   "google/gemma-2-9b-it", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "microsoft/phi-4",
                                   "some-org/unknown-model"])
def test_chat_checkpoints_and_unknown_ids_are_not_flagged(model):
    assert base_checkpoint(model) is None


def test_a_local_folder_without_a_chat_template_is_a_base_checkpoint(tmp_path):
    bare = _folder(tmp_path, "qwen2-pretrained", QWEN2)
    assert base_checkpoint(bare) == "its tokenizer has no chat template"
    chat = _folder(tmp_path, "qwen2-sft", QWEN2, chat="<|im_start|>")
    assert base_checkpoint(chat) is None  # a chat template and no marker in the name: lfgen cannot tell
