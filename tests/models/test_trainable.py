"""Trainable parameters of full, freeze and OFT fine-tuning, against LlamaFactory 0.9.5's own init_adapter
on meta-device skeletons of the models LlamaFactory's examples name (issue 15)."""

from __future__ import annotations

import warnings

import pytest

from lfgen.models import load_model
from lfgen.models.modules import build_skeleton
from lfgen.models.trainable import count_trainable, trainable_layer_ids
from lfgen.yamlio import load_config

from ..conftest import LF_EXAMPLES, needs_llamafactory

KEYS = ("finetuning_type", "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules",
        "use_llama_pro", "oft_rank", "oft_block_size", "lora_target")

# (example file, model with that architecture, layers of the skeleton): llama_pro's file points at a local
# expanded checkpoint, so its Llama-3-8B architecture is used with 16 layers (8 trainable every 2nd layer).
CASES = [
    ("examples/train_full/qwen3_full_sft.yaml", "Qwen/Qwen3-4B", 2),
    ("examples/extras/llama_pro/llama3_freeze_sft.yaml", "meta-llama/Meta-Llama-3-8B-Instruct", 16),
    ("examples/extras/oft/llama3_oft_sft.yaml", "meta-llama/Meta-Llama-3-8B-Instruct", 2),
]


def _settings(example: str) -> dict:
    config = load_config(str(LF_EXAMPLES / example))
    return {k: config[k] for k in KEYS if k in config}


def _llamafactory_count(spec, settings: dict) -> int:
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter

    model = build_skeleton(spec)
    model_args = ModelArguments(model_name_or_path=spec.name)
    finetuning_args = FinetuningArguments(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_adapter(model.config, model, model_args, finetuning_args, is_trainable=True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@needs_llamafactory
@pytest.mark.parametrize("example,model,layers", CASES)
def test_trainable_count_equals_llamafactorys_init_adapter(example, model, layers, capsys):
    spec = load_model(model).with_layers(layers)
    settings = _settings(example)
    ours = count_trainable(spec, **settings)
    theirs = _llamafactory_count(spec, settings)
    with capsys.disabled():
        print(f"\n{example} on {model} ({layers} layers): lfgen {ours.trainable:,}, LlamaFactory {theirs:,}")
    assert ours.trainable == theirs


def test_full_trains_every_parameter():
    count = count_trainable(load_model("Qwen/Qwen3-4B"), "full")
    assert count.trainable == count.total_params == 4_022_468_096


def test_freeze_layer_choice_follows_llamafactory():
    assert trainable_layer_ids(32, 2) == [30, 31]
    assert trainable_layer_ids(32, -3) == [0, 1, 2]
    assert trainable_layer_ids(40, 8, use_llama_pro=True) == [4, 9, 14, 19, 24, 29, 34, 39]


def test_freeze_counts_modules_and_extras():
    spec = load_model("meta-llama/Meta-Llama-3-8B")
    mlp = count_trainable(spec, "freeze", freeze_trainable_layers=1, freeze_trainable_modules="mlp")
    assert mlp.trainable == 3 * 4096 * 14336
    with_head = count_trainable(spec, "freeze", freeze_trainable_layers=1, freeze_trainable_modules="mlp",
                                freeze_extra_modules="lm_head")
    assert with_head.trainable == mlp.trainable + 128256 * 4096


def test_a_wrong_freeze_module_names_the_choices():
    from lfgen.errors import InputError

    with pytest.raises(InputError, match="choose from input_layernorm, mlp, post_attention_layernorm, self_attn"):
        count_trainable(load_model("meta-llama/Meta-Llama-3-8B"), "freeze", freeze_trainable_modules="attn")


def test_a_vision_language_model_is_counted_per_tower():
    # count_trainable (what the memory model and explain read) takes every tower as LlamaFactory resolves the
    # freeze keys; the adapted modules it lists are the language model's (its activations are per decoder layer).
    pytest.importorskip("transformers")
    from lfgen.models.towers import count_towers

    spec = load_model("Qwen/Qwen2-VL-2B-Instruct").with_layers(2)
    settings = {"lora_rank": 8, "freeze_vision_tower": False, "additional_target": "merger"}
    count, towers = count_trainable(spec, **settings), count_towers(spec, **settings)
    assert count.trainable == towers.total_trainable and count.modules_to_save_params == towers.trainable["projector"]
    assert sum(a.params for a in count.adapted) == towers.trainable["language"]
    assert {a.name for a in count.adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"}
    assert count.total_params == sum(towers.params.values())
