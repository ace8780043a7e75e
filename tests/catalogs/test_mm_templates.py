"""Multimodal templates: lfgen's guess per VLM id, the plugin table, the composite table, against LlamaFactory."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lfgen.catalogs.templates import accepts, multimodal, template_for
from lfgen.models import vlm
from lfgen.resources import load_data

ROOT = Path(__file__).resolve().parents[2]


# The research's tries (vlm.md §7 item 2) and the issue's: 8 of these 14 were wrong before.
@pytest.mark.parametrize("model_id,template", [
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama"),
    ("llava-hf/llava-v1.6-mistral-7b-hf", "llava_next_mistral"),
    ("google/paligemma2-3b-pt-224", "paligemma"),
    ("zai-org/GLM-4.1V-9B-Thinking", "glm4v"),
    ("mistral-community/pixtral-12b", "pixtral"),
    ("Qwen/Qwen2.5-Omni-7B", "qwen2_omni"),
    ("llava-hf/llava-1.5-7b-hf", "llava"),
    ("OpenGVLab/InternVL3-8B-hf", "intern_vl"),
    ("openbmb/MiniCPM-V-2_6", "minicpm_v"),
    ("Qwen/Qwen3-VL-4B-Instruct", "qwen3_vl_nothink"),
    ("Qwen/Qwen3-VL-4B-Thinking", "qwen3_vl"),
    ("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_vl"),
    ("google/gemma-3-4b-it", "gemma3"),
    ("google/medgemma-4b-it", "gemma3"),  # once gemma4 (gemma-4b)
    ("./models/tiny-qwen2-vl", "qwen2_vl"),
])
def test_vision_language_ids_get_their_template(model_id, template):
    assert template_for(model_id) == template


def test_every_multimodal_id_of_llamafactory_gets_its_default_template():
    pytest.importorskip("llamafactory")
    from llamafactory.extras import constants

    wrong = []
    for name in sorted(constants.MULTIMODAL_SUPPORTED_MODELS):
        hub_id = constants.SUPPORTED_MODELS[name][constants.DownloadSource.DEFAULT]
        if template_for(hub_id) != constants.DEFAULT_TEMPLATE[name]:
            wrong.append((hub_id, template_for(hub_id), constants.DEFAULT_TEMPLATE[name]))
    assert not wrong and len(constants.MULTIMODAL_SUPPORTED_MODELS) > 150


def test_the_template_file_is_the_installed_llamafactorys():
    pytest.importorskip("llamafactory")
    spec = importlib.util.spec_from_file_location("gen_mm_templates", ROOT / "scripts" / "gen_mm_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "presets" / "mm_templates.yaml").read_text(encoding="utf-8") == module.render(), \
        "presets/mm_templates.yaml is stale: run .venv/bin/python scripts/gen_mm_templates.py"


def test_the_composite_table_is_llamafactorys():
    pytest.importorskip("llamafactory")
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    assert set(vlm.composite_types()) == set(COMPOSITE_MODELS)
    for model_type, theirs in COMPOSITE_MODELS.items():
        ours = vlm.composite(model_type)
        assert (list(ours.projector), list(ours.vision), list(ours.language), list(ours.lora_conflict)) == (
            theirs.projector_keys, theirs.vision_model_keys, theirs.language_model_keys, theirs.lora_conflict_keys)


@pytest.mark.parametrize("model_type", vlm.family_types())
def test_each_family_names_real_multimodal_templates(model_type):
    family = vlm.family(model_type)
    assert family.templates and all(accepts(t, "image") for t in family.templates)
    assert vlm.composite(model_type) is not None
    assert template_for(model_type) in family.templates


def test_plugins_say_what_they_take():
    assert accepts("qwen2_vl", "image") and accepts("qwen2_vl", "video")
    assert accepts("llava", "image") and not accepts("llava", "video")
    assert not accepts("qwen", "image") and multimodal("qwen") is None
    assert not accepts("qwen2_audio", "image") and accepts("qwen2_audio", "audio")
    assert load_data("mm_templates.yaml")["llamafactory"] == "0.9.5"
