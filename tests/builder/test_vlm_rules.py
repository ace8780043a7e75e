"""A vision-language run as a shape of its own: image_max_pixels from the data and the GPU (R-VLM-PIXELS), the
cutoff on text + image tokens (R-DATA-CUTOFF, R-VLM-TOKENS), the freeze keys (R-VLM-FREEZE), seed 001's caption
preset and seed 000's two-tower schemes, and the models LlamaFactory cannot train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lfgen.builder import data_rows, datasets, shapes
from lfgen.builder.data_media import row_spans
from lfgen.builder.estimates import fit, settings_for
from lfgen.builder.options import BuildOptions
from lfgen.builder.steps import build
from lfgen.catalogs import rules
from lfgen.errors import InputError
from lfgen.models.towers import count_towers
from lfgen.tiny_vlm import CAPTIONS, MISSING

pytest.importorskip("transformers")
LADDER = [int(v) for v in rules.rule("R-VLM-PIXELS").table("ladder")]


def _spans(project: Path, name: str, pixels: int):
    info = datasets.load_info(project / "data")
    samples = [s for s, _ in data_rows.samples(name, info[name], project / "data")]
    return row_spans(samples, project / "data", str(project / "tiny-qwen2-vl"), image_max_pixels=pixels)


def test_a_composite_model_is_the_vision_shape():
    found = shapes.of_config({"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"})
    assert (found.name, found.label, found.dataset) == ("lora-sft-vision", "vision-language LoRA SFT", "mllm_demo")
    assert shapes.of_config({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct"}).modality_name == "text"
    assert shapes.of_config({"model_name_or_path": "Qwen/Qwen3-VL-4B-Instruct", "stage": "dpo"}).dataset == "rlhf_v"


def test_the_caption_preset_on_the_data_picks_the_cap_and_a_cutoff_that_cuts_no_image(vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    result = build("caption", BuildOptions.parse(model="./tiny-qwen2-vl", dataset=[CAPTIONS], dataset_dir="data"))
    config, decisions = result.config, result.decisions
    # the largest picture is 224 x 168 = 37,632 pixels: the smallest ladder step that scales none down is 50,176
    assert config["image_max_pixels"] == 50176 and decisions["image_max_pixels"].rule == "R-VLM-PIXELS"
    assert "37,632" in decisions["image_max_pixels"].reason
    spans = _spans(vlm_project, CAPTIONS, 50176)
    assert config["cutoff_len"] >= max(s.safe_cutoff() for s in spans) and config["cutoff_len"] % 64 == 0
    assert not any(s.cut_at(config["cutoff_len"]) for s in spans)
    assert decisions["cutoff_len"].rule == "R-DATA-CUTOFF" and "text + image tokens" in decisions["cutoff_len"].reason
    assert result.lengths.image_max_pixels == 50176
    assert result.lengths.image_patches == max(s.patches for s in spans) > 0
    assert (config["freeze_vision_tower"], config["freeze_multi_modal_projector"]) == (True, True)
    assert decisions["freeze_vision_tower"].rule == "R-VLM-FREEZE"
    lr = decisions["learning_rate"]
    assert (lr.value, lr.rule, config["max_grad_norm"]) == (2e-4, "R-VLM-CAPTION", 1.0)
    assert "R-LR-RANK" in lr.alternative  # the shape's own rate beside seed 001's


def test_explain_rebuilds_a_written_vlm_config_unchanged(vlm_project, runner, cli, monkeypatch):
    monkeypatch.chdir(vlm_project)
    written = runner.invoke(cli, ["preset", "caption", "--model", "./tiny-qwen2-vl", "--dataset", CAPTIONS,
                                  "--dataset-dir", "data", "-o", "c.yaml"])
    assert written.exit_code == 0, written.output
    data = json.loads(runner.invoke(cli, ["explain", "c.yaml", "--json"]).stdout)
    assert not [d for d in data["decisions"] if "edited by hand" in d["reason"]]
    assert data["shape"]["label"] == "vision-language LoRA SFT"
    text = runner.invoke(cli, ["explain", "c.yaml"]).stdout  # every rule holds: the line still names the modality
    assert "shape: vision-language LoRA SFT (image_max_pixels, the freeze keys and the image tokens: docs/vlm.md)" \
        in text


def test_caption_needs_a_vision_language_model(vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    with pytest.raises(InputError, match="caption is for vision-language models, and Qwen/Qwen2.5-7B-Instruct is a "
                                         "text model"):
        build("caption", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct"))
    # an id lfgen cannot look up (a VLM not in the catalog) is not called a text model
    with pytest.raises(InputError, match="lfgen cannot tell what example-org/Some-VL-7B is .*point --model at "
                                         "the model's local folder"):
        build("caption", BuildOptions.parse(model="example-org/Some-VL-7B"))
    default = build("caption", BuildOptions.parse())
    assert default.config["model_name_or_path"] == "Qwen/Qwen2.5-VL-3B-Instruct"  # seed 001's nearest
    assert default.decisions["model_name_or_path"].rule == "R-VLM-CAPTION"
    assert default.config["dataset"] == "mllm_demo"


def test_seed_000_schemes_train_both_towers(vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    result = build("conservative", BuildOptions.parse(model="Qwen/Qwen2-VL-2B-Instruct"))
    assert result.config["freeze_vision_tower"] is False
    assert result.config["lora_target"] == "q_proj,k_proj,v_proj,o_proj,qkv,attn.proj"  # attn on both towers
    counted = count_towers("Qwen/Qwen2-VL-2B-Instruct", lora_rank=32, lora_target=result.config["lora_target"],
                           freeze_vision_tower=False)
    text_only = count_towers("Qwen/Qwen2-VL-2B-Instruct", lora_rank=32, lora_target="q_proj,k_proj,v_proj,o_proj")
    assert counted.trainable["language"] == text_only.trainable["language"]  # attn.proj reaches no *_proj
    assert counted.trainable["vision"] > 0 and sorted(counted.targets) == ["k_proj", "o_proj", "proj", "q_proj",
                                                                            "qkv", "v_proj"]
    llava = build("efficiency", BuildOptions.parse(model="llava-hf/llava-1.5-7b-hf"))
    assert llava.config["lora_target"] == "q_proj,v_proj"  # CLIP's q_proj and v_proj share the Llama names


@pytest.fixture
def big_images(tmp_path: Path) -> Path:
    """Two 12 MP photos (phone size) with long captions: the cap decides their tokens."""
    from PIL import Image

    (tmp_path / "data" / "images").mkdir(parents=True)
    rows = []
    for i in range(2):
        Image.new("RGB", (4032, 3024), (40 * i, 120, 60)).save(tmp_path / "data" / "images" / f"{i}.jpg")
        rows.append({"messages": [{"role": "user", "content": "<image>Describe this remote sensing image."},
                                  {"role": "assistant", "content": "fields beside a river and a road. " * 4}],
                     "images": [f"images/{i}.jpg"]})
    (tmp_path / "data" / "big.json").write_text(json.dumps(rows))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"big": {
        "file_name": "big.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": tags}}))
    return tmp_path


def test_the_gpu_steps_image_max_pixels_down_until_micro_batch_1_fits(big_images, monkeypatch):
    monkeypatch.chdir(big_images)
    model = "Qwen/Qwen2.5-VL-7B-Instruct"
    options = dict(model=model, dataset=["big"], dataset_dir="data", gpu_mem=23.0)
    result = build("aggressive", BuildOptions.parse(**options))
    chosen = result.config["image_max_pixels"]
    decision = result.decisions["image_max_pixels"]
    assert decision.rule == "R-VLM-PIXELS" and f"with image_max_pixels {chosen:,} it fits" in decision.reason
    assert result.estimate.fits and result.config["per_device_train_batch_size"] >= 1
    assert chosen < LADDER[0]
    # the step above the chosen one does not fit at micro-batch 1, with its own recounted cutoff and images
    above = LADDER[LADDER.index(chosen) - 1]
    at_above = build("aggressive", BuildOptions.parse(**options, set={"image_max_pixels": above}))
    assert not at_above.estimate.fits and at_above.config["cutoff_len"] > result.config["cutoff_len"]
    assert any(f"--set image_max_pixels={chosen}" in w for w in at_above.warnings)  # the user's cap: advice
    # fewer image tokens, fewer vision patches in the estimate
    assert at_above.lengths.image_patches > result.lengths.image_patches


def test_a_missing_image_is_said_by_preset_and_refused_by_validate(vlm_project, runner, cli, monkeypatch):
    monkeypatch.chdir(vlm_project)
    result = build("caption", BuildOptions.parse(model="./tiny-qwen2-vl", dataset=[MISSING], dataset_dir="data"))
    assert any(w.startswith("R-VLM-TOKENS: 1 image(s) of the data cannot be read, e.g. images/missing.png")
               for w in result.warnings)
    Path("m.yaml").write_text("model_name_or_path: ./tiny-qwen2-vl\nstage: sft\ndo_train: true\nfinetuning_type: "
                              f"lora\ndataset: {MISSING}\ndataset_dir: data\ntemplate: qwen2_vl\noutput_dir: out\n")
    checked = runner.invoke(cli, ["validate", "--no-parser", "m.yaml"])
    assert checked.exit_code == 1
    assert "1 image file(s) do not exist under media_dir" in checked.stdout + checked.stderr


@pytest.mark.parametrize("model,nearest", [("openai/clip-vit-base-patch32", "llava-hf/llava-1.5-7b-hf"),
                                           ("./blip", "Qwen2.5-VL"),
                                           # seed 001's own hub ids, which the offline catalog does not hold
                                           ("Salesforce/instructblip-vicuna-7b", "Qwen2.5-VL"),
                                           ("Salesforce/blip2-opt-2.7b", "Qwen2.5-VL")])
def test_clip_and_instructblip_are_refused_with_the_nearest_model(model, nearest, tmp_path, runner, cli,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blip").mkdir()
    (tmp_path / "blip" / "config.json").write_text('{"model_type": "instructblip"}')
    made = runner.invoke(cli, ["preset", "auto", "--model", model])
    assert made.exit_code == 1 and "LlamaFactory cannot train" in made.stderr and nearest in made.stderr
    assert "Traceback" not in made.output
    Path("c.yaml").write_text(f"model_name_or_path: {model}\nstage: sft\ndo_train: true\nfinetuning_type: lora\n"
                              "output_dir: out\n")
    explained = runner.invoke(cli, ["explain", "c.yaml"])
    assert "LlamaFactory cannot train" in explained.output and nearest in explained.output


def test_the_estimate_reads_the_freeze_keys_and_the_images():
    config = {"model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "image_max_pixels": 262144,
              "freeze_vision_tower": False}
    values = settings_for(config, 1)
    assert values["freeze_vision_tower"] is False
    assert (values["image_patches"], values["image_tokens"]) == (4 * 324, 324 + 2)  # one 512 x 512 image
    assert settings_for({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct"}, 1)["image_patches"] == 0
    frozen = fit("Qwen/Qwen2-VL-2B-Instruct", {**config, "freeze_vision_tower": True}, None, 80, 1, 0.15, 32)
    trained = fit("Qwen/Qwen2-VL-2B-Instruct", config, None, 80, 1, 0.15, 32)
    assert trained.estimate.breakdown["activations"] > frozen.estimate.breakdown["activations"]


def test_the_vision_axis_sweeps_the_tower_frozen_and_trained(vlm_project, monkeypatch):
    from lfgen.experiments.make import make_sweep

    monkeypatch.chdir(vlm_project)
    options = BuildOptions.parse(model="./tiny-qwen2-vl", dataset=[CAPTIONS], dataset_dir="data")
    experiment = make_sweep("vision", [], base="caption", options=options)
    frozen = {path.stem: yaml.safe_load(path.read_text())["freeze_vision_tower"]
              for path in (experiment.path / "runs").glob("*.yaml")}
    assert frozen == {"freeze_vision_tower-true": True, "freeze_vision_tower-false": False}
    with pytest.raises(InputError, match="vision: the base trains a text model"):
        make_sweep("vision", [], base="a800", options=BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct"),
                   name="text-vision")
    with pytest.raises(InputError, match="'maybe' is not true or false"):
        make_sweep("vision", ["maybe"], base="caption", options=options, name="bad")
