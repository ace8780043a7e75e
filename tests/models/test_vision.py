"""The vision tower's memory terms: every tower's weights, activations only when the tower trains.

The slow test is the oracle for the activation formula: the bytes autograd keeps for backward in the vision
tower of a Qwen2-VL with Qwen2-VL-2B's ViT widths (two blocks), LoRA applied by LlamaFactory's own init_adapter,
counted with saved_tensors_hooks (each storage once), as ../shared/research/vlm.md §3.3 measured it.
"""

from __future__ import annotations

import pytest

from lfgen.models import estimate_memory, load_model
from lfgen.models.image_tokens import image_tokens, rule_for, vision_patches
from lfgen.models.memory import settings_from
from lfgen.models.towers import tower_params
from lfgen.models.vision import activation_bytes, tower, weight_bytes

from ..conftest import needs_llamafactory

pytest.importorskip("transformers")
QWEN = "Qwen/Qwen2-VL-2B-Instruct"


def test_the_vision_tower_of_qwen2_vl_2b():
    vt = tower(load_model(QWEN))
    assert (vt.blocks, vt.hidden, vt.intermediate, vt.gated) == (32, 1280, 5120, False)
    assert vt.block_elements == 11 * 1280 + 3 * 5120  # 23.0 x hidden: the research measured 23.05


def test_weights_count_every_tower():
    spec = load_model(QWEN)
    towers = tower_params(spec)
    bf16, _ = weight_bytes(spec, settings_from(), 4.127)
    assert bf16 == (towers["vision"] + towers["projector"]) * 2
    nf4, largest = weight_bytes(spec, settings_from(quantization_bit=4), 4.127)
    # Linear layers at 4.127 bits, the rest 16-bit; the largest is the merger's 5,120 x 5,120
    assert (towers["vision"] + towers["projector"]) * 0.5 < nf4 < bf16 / 3 and largest == 5120 * 5120
    text_only = estimate_memory(load_model("Qwen/Qwen2-1.5B-Instruct"), cutoff_len=512).breakdown["weights"]
    whole = estimate_memory(spec, cutoff_len=512).breakdown["weights"]
    assert whole - text_only == pytest.approx(bf16 / 2**30, rel=0.01)  # Qwen2-VL-2B = Qwen2-1.5B + its towers


def test_vision_activations_only_when_the_tower_trains():
    spec = load_model(QWEN)
    rule = rule_for(spec)
    tokens = image_tokens(rule, 896, 896, 1_048_576)
    patches = vision_patches(rule, tokens)
    assert (tokens, patches) == (1024 + 2, 4096)
    frozen = settings_from(image_patches=patches, image_tokens=tokens, cutoff_len=1200)
    trained = frozen.model_copy(update={"freeze_vision_tower": False})
    assert activation_bytes(spec, frozen, {"vision": 0, "projector": 0}) == 0
    # without checkpointing: 32 blocks x 23 x 1280 elements x 4,096 patches x 2 B = 7.7 GB (vlm.md §3.3: ~7.7 GB)
    no_gc = trained.model_copy(update={"gradient_checkpointing": False})
    assert activation_bytes(spec, no_gc, {"vision": 1}) == 32 * (23 * 1280) * 4096 * 2
    gc = activation_bytes(spec, trained, {"vision": 1})
    assert gc == (32 * 1280 + 23 * 1280) * 4096 * 2  # each block's input, one block recomputed
    a = estimate_memory(spec, frozen)
    b = estimate_memory(spec, trained)
    assert b.breakdown["activations"] - a.breakdown["activations"] == pytest.approx(gc / 2**30)
    assert any("nothing trains in the vision tower" in n for n in a.notes)
    assert any("trained vision tower keeps 32 blocks" in n for n in b.notes)


def test_the_projector_keeps_its_inputs_when_it_trains():
    spec = load_model(QWEN)
    s = settings_from(image_patches=1024, image_tokens=256, additional_target="merger")
    vt = tower(spec)
    assert activation_bytes(spec, s, {"projector": 1}) == vt.projector_inputs * 256 * 2
    assert activation_bytes(spec, s, {"projector": 0}) == 0


@pytest.mark.slow
@needs_llamafactory
def test_the_formula_equals_what_autograd_keeps_in_a_lora_vit(tiny_vlm):
    """Qwen2-VL-2B's ViT widths, two blocks, LoRA on the tower by LlamaFactory's init_adapter, fp32, no
    checkpointing: the bytes saved for backward in the vision forward, against lfgen's blocks x elements."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter

    from lfgen.models.catalog import spec_from_config

    vision = {"depth": 2, "embed_dim": 1280, "hidden_size": 64, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
    processor = AutoProcessor.from_pretrained(tiny_vlm.qwen2_vl)
    base = Qwen2VLConfig.from_pretrained(tiny_vlm.qwen2_vl).to_dict()
    config = Qwen2VLConfig(**{**base, "vision_config": vision})
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model = init_adapter(config, model, ModelArguments(model_name_or_path=str(tiny_vlm.qwen2_vl)),
                         FinetuningArguments(finetuning_type="lora", lora_target="all", freeze_vision_tower=False),
                         is_trainable=True)
    pixels = processor.image_processor(images=[Image.new("RGB", (224, 224), (90, 120, 150))], return_tensors="pt")
    patches = int(pixels["image_grid_thw"].prod())
    seen = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in model.parameters()}
    saved = 0

    def pack(t):
        nonlocal saved
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    visual = model.base_model.model.model.visual
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        visual(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"])
    spec = spec_from_config({**config.to_dict(), "model_type": "qwen2_vl"}, "vit-widths", "test")
    vt = tower(spec)
    ours = vt.blocks * vt.block_elements * patches * 4
    print(f"\nvision tower, {patches} patches, 2 blocks x 1280: autograd keeps {saved / 2**20:.2f} MiB, "
          f"lfgen {ours / 2**20:.2f} MiB")
    assert patches == 256 and ours == pytest.approx(saved, rel=0.10)


def test_no_fit_option_cuts_below_one_samples_image_tokens():
    from lfgen.models import fit_micro_batch

    spec = load_model("Qwen/Qwen2.5-VL-7B-Instruct")
    # 21 GiB x 0.85: cutoff_len 1024 needs 18.8 GiB, 512 fits
    text = fit_micro_batch(spec, 21.0, cutoff_len=2048)
    with_image = fit_micro_batch(spec, 21.0, cutoff_len=2048, image_tokens=770, image_patches=3072)
    assert [o.changes["cutoff_len"] for o in text.options if "cutoff_len" in o.changes] == [512]
    assert not [o for o in with_image.options if "cutoff_len" in o.changes]  # 512 would cut the 770-token image
    assert with_image.options  # the other changes are still offered (4-bit, Liger, more GPUs)
