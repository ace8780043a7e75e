"""lfgen validate on vision-language configs: what LlamaFactory only finds after the model has loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lfgen.tiny_vlm import CAPTIONS

pytest.importorskip("transformers")  # the per-tower check builds the skeleton on the meta device


def _write(project: Path, name: str, **keys) -> str:
    config = {"model_name_or_path": "tiny-qwen2-vl", "stage": "sft", "do_train": True, "finetuning_type": "lora",
              "lora_target": "all", "dataset": CAPTIONS, "dataset_dir": "data", "template": "qwen2_vl",
              "output_dir": f"out/{name}", "report_to": "none", **keys}
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}), encoding="utf-8")
    return str(path)


def _validate(runner, cli, project: Path, *files: str):
    result = runner.invoke(cli, ["validate", *files, "--no-parser", "--json"])
    return result.exit_code, {Path(f["path"]).stem: f for f in json.loads(result.stdout)["files"]}


def test_images_under_a_text_template_are_refused_before_a_gpu(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    code, files = _validate(runner, cli, vlm_project, _write(vlm_project, "text", template="qwen"),
                            _write(vlm_project, "right"))
    assert code == 1 and files["right"]["ok"]
    (problem,) = files["text"]["problems"]
    assert problem.startswith("template: 'qwen' has no image plugin, but dataset 'tiny_captions' has images")
    assert "This model does not support image input" in problem and "use template: qwen2_vl" in problem
    assert any(n.startswith("trainable per tower") and "Text: 16.4K, Vision: 0, Projector: 0" in n
               for n in files["right"]["notes"])


def test_an_image_pillow_cannot_open_is_refused_like_a_missing_one(runner, cli, vlm_project, monkeypatch):
    """A file that exists but is no image stops LlamaFactory's preprocessing too (PIL.UnidentifiedImageError, seen
    on the tiny Qwen2-VL; tests/test_e2e_vlm.py runs it)."""
    monkeypatch.chdir(vlm_project)
    data = vlm_project / "data"
    rows = json.loads((data / f"{CAPTIONS}.json").read_text())
    (data / "images" / "corrupt.png").write_bytes(b"not a png")
    rows[1]["images"] = ["images/corrupt.png"]
    (data / "corrupt.json").write_text(json.dumps(rows), encoding="utf-8")
    info = json.loads((data / "dataset_info.json").read_text())
    info["corrupt"] = {**info[CAPTIONS], "file_name": "corrupt.json"}
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    code, files = _validate(runner, cli, vlm_project, _write(vlm_project, "corrupt", dataset="corrupt"),
                            _write(vlm_project, "right"))
    assert code == 1 and files["right"]["ok"]
    (problem,) = files["corrupt"]["problems"]
    assert problem.startswith("dataset 'corrupt': 1 image file(s) are not images Pillow can read, e.g. "
                              "images/corrupt.png (corrupt.json row 2)")
    assert "PIL.UnidentifiedImageError" in problem


def test_a_multimodal_template_of_another_family_is_refused(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    _, files = _validate(runner, cli, vlm_project, _write(vlm_project, "llava", template="llava"))
    assert any("'llava' is not a template for a qwen2_vl model" in p for p in files["llava"]["problems"])


def test_removed_keys_say_what_replaced_them(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    _, files = _validate(runner, cli, vlm_project, _write(vlm_project, "old", train_mm_proj_only=True,
                                                          image_resolution=512))
    problems = files["old"]["problems"]
    assert any(p.startswith("train_mm_proj_only: removed in LlamaFactory 0.9.2") and "freeze_language_model: true"
               in p for p in problems)
    assert any(p.startswith("image_resolution: renamed image_max_pixels") for p in problems)
    assert not any("did you mean" in p for p in problems)


def test_inert_and_skipped_projector_settings_are_said(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    _, files = _validate(runner, cli, vlm_project,
                         _write(vlm_project, "inert", freeze_multi_modal_projector=False),
                         _write(vlm_project, "skipped", lora_target="q_proj,mlp.0,mlp.2"),
                         _write(vlm_project, "container", lora_target="q_proj,merger",
                                freeze_multi_modal_projector=False),
                         _write(vlm_project, "vllm", freeze_vision_tower=False, infer_backend="vllm"))
    assert files["inert"]["ok"] and any("does nothing under lora" in n for n in files["inert"]["notes"])
    assert files["skipped"]["ok"] and any("skips silently while freeze_multi_modal_projector is true" in n
                                          for n in files["skipped"]["notes"])
    assert any("PatchMerger" in p and "not supported" in p for p in files["container"]["problems"])
    assert any("vllm" in n and "text half" in n for n in files["vllm"]["notes"])


@pytest.mark.parametrize("model_type,nearest", [("clip", "llava-hf/llava-1.5-7b-hf"), ("instructblip", "qwen2_vl")])
def test_models_llamafactory_cannot_train_name_the_nearest(runner, cli, vlm_project, monkeypatch, model_type, nearest):
    monkeypatch.chdir(vlm_project)
    (vlm_project / "m").mkdir()
    (vlm_project / "m" / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    _, files = _validate(runner, cli, vlm_project, _write(vlm_project, "seed", model_name_or_path="m"))
    (problem,) = [p for p in files["seed"]["problems"] if p.startswith("model_name_or_path")]
    assert f"(model_type {model_type}) is a model LlamaFactory cannot train" in problem and nearest in problem


def test_an_instructblip_hub_id_is_refused_without_its_folder(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    _, files = _validate(runner, cli, vlm_project, _write(vlm_project, "seed",
                                                          model_name_or_path="Salesforce/instructblip-vicuna-7b"))
    (problem,) = [p for p in files["seed"]["problems"] if p.startswith("model_name_or_path")]
    assert "(model_type instructblip) is a model LlamaFactory cannot train" in problem and "qwen2_vl" in problem


def test_llama_32_vision_under_llama3_is_the_issue_6703_crash(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    _, files = _validate(runner, cli, vlm_project,
                         _write(vlm_project, "mllama", model_name_or_path="meta-llama/Llama-3.2-11B-Vision-Instruct",
                                template="llama3"))
    assert any("'llama3' has no image plugin" in p and "use template: mllama" in p for p in files["mllama"]["problems"])
