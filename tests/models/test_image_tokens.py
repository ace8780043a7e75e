"""Image tokens per family rule, against LlamaFactory's own plugins (the slow test) and measured tables."""

from __future__ import annotations

import itertools
import json

import pytest

from lfgen.models.image_tokens import ImageRule, image_tokens, rule_for, smart_resize

from ..conftest import make_vlm_folder, needs_llamafactory

PICTURES = [(300, 168), (300, 199), (300, 166), (224, 224), (512, 512), (1024, 1024), (1920, 1080), (4032, 3024)]
# <|image_pad|> per picture through LlamaFactory 0.9.5's qwen2_vl plugin and a Qwen2-VL processor capped at
# 1,003,520 pixels (../shared/research/vlm/run_all.out, `tiny_vlm.py tokens`); lfgen adds the two markers.
MEASURED = {
    1003520: [66, 77, 66, 64, 324, 1225, 1222, 1271],
    589824: [66, 77, 66, 64, 324, 729, 777, 768],
    262144: [66, 77, 66, 64, 324, 324, 336, 336],
    50176: [66, 60, 66, 64, 64, 64, 66, 63],
    12544: [15, 15, 15, 16, 16, 16, 15, 15],
}


@pytest.mark.parametrize("max_pixels", list(MEASURED))
def test_qwen2_vl_rule_reproduces_the_measured_table(tmp_path, max_pixels):
    rule = rule_for(make_vlm_folder(tmp_path / "m"))
    assert [image_tokens(rule, w, h, max_pixels) - 2 for w, h in PICTURES] == MEASURED[max_pixels]


@pytest.mark.parametrize("model_id,size,tokens", [
    ("llava-hf/llava-1.5-7b-hf", (640, 480), 576),  # (336 / 14)^2, CLS dropped
    ("google/paligemma2-3b-pt-224", (640, 480), 256),
    ("google/gemma-3-4b-it", (640, 480), 256 + 4),  # soft tokens + "\n\n<start_of_image>" ... "<end_of_image>\n\n"
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", (640, 480), 1),  # the image goes through cross-attention
    ("OpenGVLab/InternVL3-2B-hf", (640, 480), 256 + 2),  # one 448 tile, pixel shuffle 0.5, <img></img>
    ("Qwen/Qwen3-VL-4B-Instruct", (512, 512), 256 + 2),  # one token per 32 x 32
    ("Qwen/Qwen2.5-VL-7B-Instruct", (512, 512), 324 + 2),
])
def test_catalog_models_get_their_family_rule(model_id, size, tokens):
    assert image_tokens(rule_for(model_id), *size) == tokens


def test_image_max_pixels_is_the_memory_knob():
    rule = rule_for("Qwen/Qwen2.5-VL-7B-Instruct")
    # a 12 MP phone photo: (3024 / 28) x (4032 / 28) = 15,552 tokens when LlamaFactory does not cap it, 768 at its
    # default image_max_pixels, 336 at the examples' 262144 (vlm.md §3.1)
    assert image_tokens(rule, 4032, 3024, 12845056) == 108 * 144 + 2
    assert image_tokens(rule, 4032, 3024) == 768 + 2
    assert image_tokens(rule, 4032, 3024, 262144) == 336 + 2


def test_smart_resize_rounds_half_to_even_like_transformers():
    assert smart_resize(42, 42, 28, 3136, 1003520) == (56, 56)  # round(1.5) = 2
    assert smart_resize(70, 70, 28, 3136, 1003520) == (56, 56)  # round(2.5) = 2


def test_not_a_vision_language_model_has_no_rule(tmp_path):
    assert rule_for("Qwen/Qwen2.5-7B-Instruct") is None and rule_for(None) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}), encoding="utf-8")
    assert rule_for(tmp_path) is None


def _plugin_tokens(plugin, processor, size, counted: tuple[str, ...]) -> int:
    from PIL import Image

    messages = plugin.process_messages([{"role": "user", "content": "<image>"}], [Image.new("RGB", size)], [], [],
                                       processor)
    return sum(messages[0]["content"].count(token) for token in counted)


def _processors(tiny):
    """(name, LlamaFactory template, processor, tokens the plugin writes, lfgen's rule) for five families:
    the tiny models' own processors and three built here from the tiny tokenizer (no download)."""
    from transformers import (AutoProcessor, LlavaNextImageProcessor, LlavaNextProcessor, PixtralImageProcessor,
                              PixtralProcessor, PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen3VLProcessor,
                              Qwen3VLVideoProcessor)

    qwen = AutoProcessor.from_pretrained(tiny.qwen2_vl)
    llava = AutoProcessor.from_pretrained(tiny.llava)
    tokenizer = qwen.tokenizer
    qwen3 = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, size={
        "shortest_edge": 65536, "longest_edge": 16777216}), tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor())
    image_tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, additional_special_tokens=[
        "<image>", "[IMG]", "[IMG_BREAK]", "[IMG_END]"], eos_token="</s>", pad_token="<pad>")
    llava_next = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(  # llava-v1.6's processor: 336 px crops
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}), tokenizer=image_tok, patch_size=14,
                                    vision_feature_select_strategy="default", num_additional_image_tokens=1)
    pixtral = PixtralProcessor(image_processor=PixtralImageProcessor(), tokenizer=image_tok, patch_size=16,
                               spatial_merge_size=1)
    return [
        ("qwen2_vl", "qwen2_vl", qwen, ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
         rule_for(tiny.qwen2_vl)),
        ("llava", "llava", llava, ("<image>",), rule_for(tiny.llava)),
        ("qwen3_vl", "qwen3_vl", qwen3, ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
         rule_for("Qwen/Qwen3-VL-4B-Instruct")),
        ("llava_next", "llava_next", llava_next, ("<image>",), rule_for("llava-hf/llava-v1.6-mistral-7b-hf")),
        ("pixtral", "pixtral", pixtral, ("[IMG]", "[IMG_BREAK]", "[IMG_END]"),
         rule_for("mistral-community/pixtral-12b")),
    ]


@pytest.mark.slow
@needs_llamafactory
def test_every_rule_equals_llamafactorys_plugin(tiny_vlm, capsys):
    """11 image sizes x 5 image_max_pixels x 5 families: lfgen's count equals what LlamaFactory's plugin writes."""
    from llamafactory.data.mm_plugin import get_mm_plugin

    sizes = [(300, 168), (224, 224), (512, 512), (1024, 1024), (1920, 1080), (4032, 3024), (20, 500), (56, 56),
             (17, 13), (1000, 3), (600, 900)]
    rows, wrong = [], []
    for name, template, processor, counted, rule in _processors(tiny_vlm):
        plugin = get_mm_plugin(template, image_token=counted[0],
                               video_token="<|video_pad|>" if template.startswith("qwen") else None)
        same = 0
        for max_pixels, size in itertools.product((12845056, 589824, 262144, 50176, 12544), sizes):
            processor.image_max_pixels, processor.image_min_pixels = max_pixels, 1024
            theirs, ours = _plugin_tokens(plugin, processor, size, counted), image_tokens(rule, *size, max_pixels, 1024)
            same += theirs == ours
            if theirs != ours:
                wrong.append((name, max_pixels, size, ours, theirs))
        rows.append(f"{name:11} {same}/55 equal")
    with capsys.disabled():
        print("\nimage tokens, lfgen vs LlamaFactory's plugin:\n" + "\n".join(rows))
    assert not wrong


def test_rule_describes_itself():
    assert "one token per 28x28 pixels" in rule_for("Qwen/Qwen2-VL-7B-Instruct").describe()
    assert "576 tokens" in rule_for("llava-hf/llava-1.5-7b-hf").describe()
    assert isinstance(rule_for("Qwen/Qwen2-VL-7B-Instruct"), ImageRule)
