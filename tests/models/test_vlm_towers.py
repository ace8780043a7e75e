"""Per-tower parameters and LlamaFactory's trainable resolution on vision-language models.

The slow test is the oracle: LlamaFactory's own ``init_adapter`` on meta-device skeletons of ten VLM families
(built from the catalog's configs, shrunk to 2 layers and 2 vision blocks, widths kept), every tower's
trainable parameters counted from ``requires_grad`` with LlamaFactory's own COMPOSITE_MODELS keys.
"""

from __future__ import annotations

import warnings

import pytest

from lfgen.errors import InputError
from lfgen.models import load_model
from lfgen.models.catalog import spec_from_config
from lfgen.models.towers import count_towers, tower_params

from lfgen.tiny_vlm import qwen2_vl_config

from ..conftest import needs_llamafactory

pytest.importorskip("transformers")

# One catalog model per family (widths real, depth shrunk in the oracle test).
FAMILIES = {
    "qwen2_vl": "Qwen/Qwen2-VL-2B-Instruct", "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct", "llava": "llava-hf/llava-1.5-7b-hf",
    "llava_next": "llava-hf/llava-v1.6-mistral-7b-hf", "mllama": "meta-llama/Llama-3.2-11B-Vision-Instruct",
    "paligemma": "google/paligemma2-3b-pt-224", "gemma3": "google/gemma-3-4b-it",
    "internvl": "OpenGVLab/InternVL3-1B-hf", "mistral3": "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
}
PROJECTOR = {"qwen2_vl": "merger", "qwen2_5_vl": "merger", "qwen3_vl": "merger", "mistral3": "multi_modal_projector"}
# LlamaFactory settings per case; seed 000's two-tower LoRA is `freeze_vision_tower: false`.
SETTINGS = {
    "lora-all": {"finetuning_type": "lora", "lora_target": "all"},
    "lora-two-towers": {"finetuning_type": "lora", "lora_target": "all", "freeze_vision_tower": False},
    "lora-vision-only": {"finetuning_type": "lora", "lora_target": "all", "freeze_vision_tower": False,
                         "freeze_language_model": True},
    "lora-projector": {"finetuning_type": "lora", "lora_target": "all", "additional_target": "PROJECTOR"},
    "lora-qv-two-towers-r16": {"finetuning_type": "lora", "lora_target": "q_proj,v_proj", "lora_rank": 16,
                               "freeze_vision_tower": False},
    "full": {"finetuning_type": "full"},
    "full-projector-only": {"finetuning_type": "full", "freeze_multi_modal_projector": False,
                            "freeze_language_model": True},
    "freeze-two-towers": {"finetuning_type": "freeze", "freeze_trainable_layers": 1, "freeze_vision_tower": False,
                          "freeze_multi_modal_projector": False},
}
CASES = [(family, case) for family in FAMILIES for case in SETTINGS]


def _settings(family: str, case: str) -> dict:
    settings = dict(SETTINGS[case])
    if settings.get("additional_target") == "PROJECTOR":
        settings["additional_target"] = PROJECTOR.get(family, "multi_modal_projector")
    return settings


def _llamafactory_towers(spec, settings: dict) -> dict[str, int]:
    """LlamaFactory's init_adapter on the meta skeleton; requires_grad per tower by LlamaFactory's own keys."""
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    import json

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    whole = {k: v for k, v in json.loads(spec.composite_config).items() if k != "model_type"}
    config = AutoConfig.for_model(spec.composite, **whole)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_adapter(model.config, model, ModelArguments(model_name_or_path=spec.name),
                             FinetuningArguments(**settings), is_trainable=True)
    keys = COMPOSITE_MODELS[spec.composite]
    towers = {"language": 0, "vision": 0, "projector": 0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tower = ("projector" if any(k in name for k in keys.projector_keys) else
                 "vision" if any(k in name for k in keys.vision_model_keys) else "language")
        towers[tower] += param.numel()
    return towers


@pytest.fixture(scope="module")
def oracle_table():
    rows = {}
    for family, case in CASES:
        spec = load_model(FAMILIES[family]).with_layers(2)
        settings = _settings(family, case)
        rows[family, case] = (count_towers(spec, **settings).trainable, _llamafactory_towers(spec, settings))
    print("\n\nTrainable parameters per tower, 2-layer skeletons: lfgen vs LlamaFactory init_adapter (meta device)")
    print(f"{'family':11} {'case':24} {'language':>12} {'vision':>11} {'projector':>10}  LlamaFactory")
    for (family, case), (ours, theirs) in rows.items():
        print(f"{family:11} {case:24} {ours['language']:>12,} {ours['vision']:>11,} {ours['projector']:>10,}  "
              f"{'same' if ours == theirs else theirs}")
    return rows


@pytest.mark.slow
@needs_llamafactory
@pytest.mark.parametrize("family,case", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_per_tower_counts_equal_llamafactorys_init_adapter(oracle_table, family, case):
    ours, theirs = oracle_table[family, case]
    assert ours == theirs


# Measured with LlamaFactory 0.9.5's init_adapter on the tiny Qwen2-VL (../shared/research/vlm.md §2.2).
RESEARCH_TABLE = [
    ({}, 16384, 0, 0),
    ({"freeze_vision_tower": False}, 16384, 6144, 0),
    ({"freeze_vision_tower": False, "freeze_language_model": True}, 0, 6144, 0),
    ({"additional_target": "merger", "freeze_multi_modal_projector": False}, 16384, 0, 24832),
    ({"lora_target": "q_proj,v_proj,mlp.0,mlp.2", "freeze_multi_modal_projector": False}, 3584, 0, 3584),
    ({"lora_target": "q_proj,mlp.0,mlp.2"}, 2048, 0, 0),
    ({"lora_target": "q_proj,v_proj,qkv", "freeze_vision_tower": False}, 3584, 2048, 0),
    ({"finetuning_type": "full", "freeze_multi_modal_projector": False, "freeze_language_model": True}, 0, 0, 24832),
    ({"finetuning_type": "full"}, 132480, 0, 0),
]


@pytest.fixture(scope="module")
def tiny_spec():
    # the research's tiny Qwen2-VL had a 909-token vocabulary: the full-tuning count includes its embeddings
    return spec_from_config(qwen2_vl_config(909), "tiny-qwen2-vl", "tests")


@pytest.mark.parametrize("settings,language,vision,projector", RESEARCH_TABLE)
def test_tiny_qwen2_vl_matches_the_measured_table(tiny_spec, settings, language, vision, projector):
    count = count_towers(tiny_spec, **settings)
    assert count.trainable == {"language": language, "vision": vision, "projector": projector}


def test_tiny_qwen2_vl_towers(tiny_spec):
    # vlm.md §5: 212,032 parameters, of which ViT + merger 79,552.
    towers = tower_params(tiny_spec)
    assert sum(towers.values()) == 212_032 and towers["vision"] + towers["projector"] == 79_552


def test_two_tower_split_reads_like_seed_000(tiny_spec):
    count = count_towers(tiny_spec, freeze_vision_tower=False)
    assert count.split() == "Text: 16.4K, Vision: 6.14K, Projector: 0"
    assert count.targets == ("down_proj", "fc1", "fc2", "gate_proj", "k_proj", "o_proj", "proj", "q_proj", "qkv",
                             "up_proj", "v_proj")


def test_the_projector_container_as_a_target_is_peft_s_error(tiny_spec):
    with pytest.raises(InputError, match="matches model.visual.merger, a PatchMerger.*additional_target: merger"):
        count_towers(tiny_spec, lora_target="q_proj,merger", freeze_multi_modal_projector=False)


def test_projector_names_skipped_while_frozen_are_said(tiny_spec):
    count = count_towers(tiny_spec, lora_target="q_proj,mlp.0,mlp.2")
    assert any("mlp.0, mlp.2" in n and "freeze_multi_modal_projector is true" in n for n in count.notes)


def test_an_unfrozen_projector_without_a_target_does_nothing(tiny_spec):
    count = count_towers(tiny_spec, freeze_multi_modal_projector=False)
    assert count.trainable["projector"] == 0
    assert any("does nothing" in n and "additional_target: merger" in n for n in count.notes)


def test_a_target_only_in_the_frozen_tower_matches_nothing(tiny_spec):
    with pytest.raises(InputError, match="lora_target: qkv matches no module LlamaFactory would adapt"):
        count_towers(tiny_spec, lora_target="qkv")


def test_seed_000_targets_on_llava_miss_the_llama_output_projection():
    # vlm.md §2.2: seed 000's CLIP list puts LoRA on the CLIP tower's attention and on Llama's q/k/v, not o_proj.
    count = count_towers(load_model("llava-hf/llava-1.5-7b-hf"), lora_target="q_proj,k_proj,v_proj,out_proj",
                         freeze_vision_tower=False)
    assert "o_proj" not in count.targets and "out_proj" in count.targets
    assert count.trainable["vision"] == 24 * 4 * 8 * (1024 + 1024)  # 24 CLIP layers x q/k/v/out x r(in+out)
    assert count.trainable["language"] == 32 * 3 * 8 * (4096 + 4096)


def test_a_text_model_is_not_split_into_towers():
    with pytest.raises(InputError, match="not a vision-language model"):
        count_towers(load_model("Qwen/Qwen2.5-0.5B"))


# LlamaFactory's own VLM examples, on their models (2 layers): OFT on Qwen2.5-VL, LoRA on Qwen3-VL, full Qwen3-VL.
EXAMPLES = [("examples/extras/oft/qwen2_5vl_oft_sft.yaml", "Qwen/Qwen2.5-VL-7B-Instruct"),
            ("examples/train_lora/qwen3vl_lora_sft.yaml", "Qwen/Qwen3-VL-4B-Instruct"),
            ("examples/train_full/qwen3vl_full_sft.yaml", "Qwen/Qwen3-VL-4B-Instruct")]


@pytest.mark.slow
@needs_llamafactory
@pytest.mark.parametrize("example,model", EXAMPLES)
def test_llamafactorys_vlm_examples_are_counted_as_it_counts_them(example, model, capsys):
    from lfgen.yamlio import load_config

    from ..conftest import LF_EXAMPLES

    keys = ("finetuning_type", "lora_rank", "lora_target", "oft_block_size", "oft_rank", "freeze_vision_tower",
            "freeze_multi_modal_projector", "freeze_language_model", "additional_target")
    config = load_config(str(LF_EXAMPLES / example))
    settings = {k: config[k] for k in keys if k in config}
    spec = load_model(model).with_layers(2)
    ours, theirs = count_towers(spec, **settings).trainable, _llamafactory_towers(spec, settings)
    with capsys.disabled():
        print(f"\n{example} on {model} (2 layers): lfgen {ours}, LlamaFactory {theirs}")
    assert ours == theirs and sum(ours.values()) > 0
