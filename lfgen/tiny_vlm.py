"""Tiny vision-language models, generated images and a caption dataset, built locally (no network): for the
VLM end-to-end tests (and, later, a VLM demo).

* a tiny Qwen2-VL: text 2 layers x 64 wide (4 heads, 2 KV heads, mrope sections [4, 2, 2]), ViT 2 blocks x
  32 wide (patch 14, merge 2: one token per 28 x 28 pixels), with Qwen2-VL's own processor;
* a tiny LLaVA: a 2-layer CLIP tower at 56 x 56 px (16 image tokens) and a 2-layer Llama, seed 000's
  "LoRA on the CLIP tower" in miniature;
* a byte-level BPE tokenizer trained on the captions, holding the Qwen and LLaVA special tokens;
* images drawn with Pillow (a shape of a colour on a background of another), captions that say what is
  drawn, in LlamaFactory's sharegpt layout with an ``images`` column (its mllm_demo layout).

Everything is seeded: the same files every time. The recipe is ../shared/research/vlm.md §5 (llamafactory-cli
trains, evaluates and predicts these on the CPU in 13-30 s per run).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lfgen.layout import DATASET_INFO

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>", "<pad>"]
LLAVA_SPECIALS = ["<image>", "<s>", "</s>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HIDDEN = 64
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40),
          "black": (20, 20, 20), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle")
# Image sizes (width, height): multiples of 28 and not, portrait and landscape; at most 224 x 168 so that a
# CPU step stays short (image_max_pixels 50176 = 224 x 224 leaves them as they are).
SIZES = ((112, 112), (140, 84), (84, 140), (224, 168), (100, 75), (56, 56))
PROMPT = "<image>Describe this image."
CAPTIONS = "tiny_captions"
MISSING = "tiny_captions_missing"
# What a CPU run of a tiny VLM needs on top of its keys: three steps, logged every step, small images.
CPU_SETTINGS = {
    "max_steps": 3, "logging_steps": 1, "save_steps": 3, "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 1, "learning_rate": 1.0e-3, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0, "overwrite_cache": True, "image_max_pixels": 50176, "report_to": "none",
    "lora_rank": 8, "cutoff_len": 1024,
}


def qwen2_vl_config(vocab_size: int, ids: dict[str, int] | None = None) -> dict[str, Any]:
    """The tiny Qwen2-VL's config as transformers' Qwen2VLConfig takes it (token ids from the tokenizer)."""
    ids = ids or {}
    heads = 4
    half = HIDDEN // heads // 2  # mrope sections (t, h, w) must sum to head_dim / 2 (transformers 5.x key)
    rope = {"rope_type": "default", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
            "rope_theta": 1000000.0}
    text = {"vocab_size": vocab_size, "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": 2, "max_position_embeddings": 32768,
            "rope_parameters": rope, "eos_token_id": ids.get("<|im_end|>"), "pad_token_id": ids.get("<pad>"),
            "bos_token_id": None}
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": HIDDEN, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
    config = {"model_type": "qwen2_vl", "tie_word_embeddings": True, "text_config": text, "vision_config": vision}
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
                       ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<pad>")):
        if token in ids:
            config[key] = ids[token]
    return config


def _rows(count: int) -> list[tuple[str, str, str, tuple[int, int]]]:
    """(shape, colour, background, size) of each picture, seeded."""
    rng = random.Random(0)
    rows = []
    for i in range(count):
        shape, color = SHAPES[i % len(SHAPES)], rng.choice(list(COLORS))
        background = rng.choice([c for c in COLORS if c != color])
        rows.append((shape, color, background, SIZES[i % len(SIZES)]))
    return rows


def _draw(path: Path, shape: str, color: str, background: str, size: tuple[int, int]) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, COLORS[background])
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    else:
        draw.polygon([(w // 2, h // 5), (w // 5, 4 * h // 5), (4 * w // 5, 4 * h // 5)], fill=COLORS[color])
    image.save(path)


def caption(shape: str, color: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background."


def make_images_dataset(out: str | Path, rows: int = 12) -> Path:
    """Draw *rows* pictures into out/images and register two sharegpt datasets in out/dataset_info.json:
    ``tiny_captions`` and ``tiny_captions_missing`` (the same rows, one image path that does not exist)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (shape, color, background, size) in enumerate(_rows(rows)):
        name = f"images/{i:02d}_{color}_{shape}.png"
        _draw(out / name, shape, color, background, size)
        records.append({"messages": [{"role": "user", "content": PROMPT},
                                     {"role": "assistant", "content": caption(shape, color, background)}],
                        "images": [name]})
    (out / f"{CAPTIONS}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    broken = json.loads(json.dumps(records))
    broken[1]["images"] = ["images/missing.png"]
    (out / f"{MISSING}.json").write_text(json.dumps(broken, indent=1), encoding="utf-8")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    sharegpt = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}, "tags": tags}
    info_path = out / DATASET_INFO
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info.update({CAPTIONS: {"file_name": f"{CAPTIONS}.json", **sharegpt},
                 MISSING: {"file_name": f"{MISSING}.json", **sharegpt}})
    info_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


def _tokenizer(rows: int = 12):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = [*COLORS, *SHAPES, "a", "on", "background", "describe", "this", "image", "you", "are", "helpful",
             "assistant", "system", "user"]
    corpus = [caption(*r[:3]) for r in _rows(rows * 4)] + [PROMPT.replace("<image>", "")]
    corpus += [" ".join(rng.choices(words, k=rng.randint(4, 16))) + "." for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=512, special_tokens=QWEN_SPECIALS + LLAVA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", unk_token=None,
                                   additional_special_tokens=QWEN_SPECIALS[1:7], model_max_length=32768,
                                   chat_template=CHAT_TEMPLATE)


def _save_generation(model, out: Path, eos: int, pad: int) -> None:
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.save_pretrained(out)


def make_qwen2_vl(out: str | Path) -> Path:
    """A tiny random Qwen2-VL, its tokenizer and processor in *out*; returns *out*."""
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                     video_processor=Qwen2VLVideoProcessor()).save_pretrained(out)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = qwen2_vl_config(len(tokenizer), ids)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    model.save_pretrained(out)
    _save_generation(model, out, ids["<|im_end|>"], ids["<pad>"])
    return out


def make_llava(out: str | Path) -> Path:
    """A tiny random LLaVA (2-layer CLIP tower at 56 px, 2-layer Llama), tokenizer and processor in *out*."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_tokenizer().backend_tokenizer, bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>", unk_token=None,
                                        additional_special_tokens=["<image>"], model_max_length=4096)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>",
                   chat_template=CHAT_TEMPLATE).save_pretrained(out)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=56, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    model = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2))
    model.save_pretrained(out)
    _save_generation(model, out, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return out
