"""Vision-language runs for real, on the CPU, offline: tiny Qwen2-VL and LLaVA models built here (random weights,
generated pictures), trained by LlamaFactory through `lfgen run`, predicted with `llamafactory-cli`, and lfgen's
numbers checked against what LlamaFactory did:

* LoRA on both towers of the Qwen2-VL plus its projector through additional_target, on the row with the most
  image tokens at exactly the cutoff_len `lfgen data` says keeps every image whole: it trains, and LlamaFactory's
  "trainable params" equals lfgen's per-tower count;
* one token less: LlamaFactory crashes at its first step (the oracle of the cutoff guard);
* seed 000's two-tower LoRA (q_proj,k_proj,v_proj,out_proj) on the LLaVA's CLIP tower and Llama;
* `lfgen demo --vlm`: preset (lfgen's own image_max_pixels and cutoff), sweep, run (vision tower frozen and
  trained), lfgen eval (LlamaFactory's predict, CIDEr-D), compare, report with thumbnails;
* a missing picture: validate refuses it, and the run that goes ahead anyway dies in preprocessing;
* each row's prompt, answer and image end as lfgen counts them equal LlamaFactory's own encoding.

No stand-ins: HF_HUB_OFFLINE=1, nothing downloaded. Each LlamaFactory run is 3 steps (about 20 s idle).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lfgen.builder import data_rows, datasets
from lfgen.builder.data_media import row_spans
from lfgen.models.towers import count_towers
from lfgen.tiny_vlm import CAPTIONS, CPU_SETTINGS, MISSING

from .conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]
ONE = "tiny_captions_one"  # the row with the most image tokens, alone: every step sees it


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the test venv's llamafactory-cli
    return env


def lfgen(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def _config(tiny, name: str, model: Path, template: str, **keys) -> Path:
    config = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
              "lora_target": "all", "dataset": ONE, "dataset_dir": str(tiny.data), "template": template,
              "output_dir": str(tiny.root / "outputs" / name), "overwrite_output_dir": True, **CPU_SETTINGS, **keys}
    config = {k: v for k, v in config.items() if v is not None}  # None: leave LlamaFactory's default
    path = tiny.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _trainable(log: str) -> int:
    return int(re.search(r"trainable params: ([\d,]+)", log).group(1).replace(",", ""))


def _samples(tiny, name: str):
    return _samples_in(tiny.data, name)


def _samples_in(data: Path, name: str):
    info = datasets.load_info(data)
    return [s for s, _ in data_rows.samples(name, info[name], data)]


@pytest.fixture(scope="module")
def one_row(tiny_vlm):
    """A dataset holding only the caption row with the most image tokens, and lfgen's safe cutoff for it."""
    rows = json.loads((tiny_vlm.data / f"{CAPTIONS}.json").read_text())
    spans = row_spans(_samples(tiny_vlm, CAPTIONS), tiny_vlm.data, str(tiny_vlm.qwen2_vl),
                      image_max_pixels=CPU_SETTINGS["image_max_pixels"])
    worst = max(range(len(rows)), key=lambda i: spans[i].image_end)
    (tiny_vlm.data / f"{ONE}.json").write_text(json.dumps([rows[worst]]), encoding="utf-8")
    info = json.loads((tiny_vlm.data / "dataset_info.json").read_text())
    info[ONE] = {**info[CAPTIONS], "file_name": f"{ONE}.json"}
    (tiny_vlm.data / "dataset_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    data = lfgen(tiny_vlm.root, "data", ONE, "--dataset-dir", "data", "--model", str(tiny_vlm.qwen2_vl),
                 "--image-max-pixels", str(CPU_SETTINGS["image_max_pixels"]), "--json")
    assert data.returncode == 0, data.stderr
    media = json.loads(data.stdout)["datasets"][0]["media"]
    assert media["safe_cutoff_len"] == spans[worst].safe_cutoff()
    return media["safe_cutoff_len"]


@pytest.fixture(scope="module")
def two_towers(tiny_vlm, one_row):
    """LoRA on the ViT and the language model, the merger trained whole, at the safe cutoff: `lfgen run`."""
    config = _config(tiny_vlm, "qwen-two-towers", tiny_vlm.qwen2_vl, "qwen2_vl", cutoff_len=one_row,
                     freeze_vision_tower=False, additional_target="merger")
    start = time.perf_counter()
    result = lfgen(tiny_vlm.root, "run", str(config), "--quiet")
    print(f"\nlfgen run, Qwen2-VL two towers + merger: {time.perf_counter() - start:.1f} s wall")
    return result, tiny_vlm.root / "outputs" / "qwen-two-towers"


def test_vision_lora_and_the_projector_train_at_the_safe_cutoff(tiny_vlm, two_towers):
    result, out = two_towers
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "lfgen_train.log").read_text()
    ours = count_towers(str(tiny_vlm.qwen2_vl), lora_rank=8, freeze_vision_tower=False, additional_target="merger")
    assert _trainable(log) == ours.total_trainable == 47_360  # vlm.md §2.2: 16,384 + 6,144 + 24,832
    assert ours.trainable == {"language": 16_384, "vision": 6_144, "projector": 24_832}
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("visual.blocks" in k and "lora_A" in k for k in keys)  # LoRA on the ViT
    assert any("visual.merger" in k and "lora" not in k for k in keys)  # the whole merger, saved with the adapter
    losses = [json.loads(line)["loss"] for line in (out / "trainer_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 3 and all(loss == loss for loss in losses)


def test_one_token_less_cuts_the_image_and_llamafactory_crashes(tiny_vlm, one_row):
    config = _config(tiny_vlm, "qwen-cut", tiny_vlm.qwen2_vl, "qwen2_vl", cutoff_len=one_row - 1)
    start = time.perf_counter()
    result = lfgen(tiny_vlm.root, "run", str(config), "--quiet")
    print(f"\nlfgen run, cutoff_len one below the safe one: {time.perf_counter() - start:.1f} s wall")
    log = (tiny_vlm.root / "outputs" / "qwen-cut" / "lfgen_train.log").read_text()
    assert result.returncode == 1
    assert "shape mismatch" in log or "do not match" in log  # transformers 5.x / 4.x wording of the cut span
    data = lfgen(tiny_vlm.root, "data", ONE, "--dataset-dir", "data", "--model", str(tiny_vlm.qwen2_vl),
                 "--image-max-pixels", str(CPU_SETTINGS["image_max_pixels"]), "--cutoff-len", str(one_row - 1))
    assert "cuts into the image tokens of 1 rows" in data.stdout


def test_lfgen_writes_a_cutoff_that_keeps_the_image_whole(tiny_vlm, one_row):
    """The guard without a flag: lfgen preset on the row with the most image tokens writes a cutoff_len at or above
    the one LlamaFactory needs (one_row: the exact boundary the two tests above train at and crash below), with the
    tiny model's own tokenizer counting the text."""
    out = tiny_vlm.root / "caption-one.yaml"
    made = lfgen(tiny_vlm.root, "preset", "caption", "--model", str(tiny_vlm.qwen2_vl), "--dataset", ONE,
                 "--dataset-dir", "data", "-o", str(out), "--force")
    assert made.returncode == 0, made.stderr
    config = yaml.safe_load(out.read_text())
    assert config["cutoff_len"] >= one_row and config["image_max_pixels"] == CPU_SETTINGS["image_max_pixels"]
    assert "# R-DATA-CUTOFF" in out.read_text().split("cutoff_len: ")[1].splitlines()[0]


def test_seed_000_two_tower_lora_on_llava(tiny_vlm, one_row):
    targets = "q_proj,k_proj,v_proj,out_proj"  # seed 000's CLIP list: Llama's output projection is o_proj
    config = _config(tiny_vlm, "llava-seed-000", tiny_vlm.llava, "llava", lora_target=targets,
                     freeze_vision_tower=False, image_max_pixels=None)
    start = time.perf_counter()
    result = lfgen(tiny_vlm.root, "run", str(config), "--quiet")
    print(f"\nlfgen run, LLaVA seed 000 two towers: {time.perf_counter() - start:.1f} s wall")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tiny_vlm.root / "outputs" / "llava-seed-000" / "lfgen_train.log").read_text()
    ours = count_towers(str(tiny_vlm.llava), lora_target=targets, freeze_vision_tower=False)
    assert _trainable(log) == ours.total_trainable == 9_216  # vlm.md §5: CLIP tower 4,096 + Llama 5,120
    assert ours.split() == "Text: 5.12K, Vision: 4.1K, Projector: 0" and "o_proj" not in ours.targets


def test_the_vlm_demo_loop_captions_and_reports(tmp_path, tiny_vlm):
    """`lfgen demo --vlm`: seed 001's caption preset on the tiny Qwen2-VL, whose image_max_pixels and cutoff_len
    lfgen picks from the data's pictures (a cutoff that cuts no image: every row trains), two runs (vision tower
    frozen and trained), lfgen eval's captions scored (BLEU, ROUGE, CIDEr-D), compare, and a report with the
    pictures beside the answers."""
    shutil.copytree(tiny_vlm.qwen2_vl, tmp_path / "demo" / "tiny-qwen2-vl")  # the session's model: not built again
    start = time.perf_counter()
    demo = lfgen(tmp_path, "demo", "--vlm", "demo", "--quiet")
    print(f"\nlfgen demo --vlm: {time.perf_counter() - start:.1f} s wall")
    assert demo.returncode == 0, demo.stderr[-3000:]
    root = tmp_path / "demo"
    runs = sorted((root / "experiments" / "demo-vlm" / "runs").glob("*.yaml"))
    assert [p.stem for p in runs] == ["freeze_vision_tower-false", "freeze_vision_tower-true"]
    config = yaml.safe_load(runs[0].read_text())
    text = runs[0].read_text()
    assert "cutoff_len: " in text and "# R-DATA-CUTOFF" in text.split("cutoff_len: ")[1].splitlines()[0]
    assert "# R-VLM-PIXELS" in text.split("image_max_pixels: ")[1].splitlines()[0]
    spans = row_spans(_samples_in(root / "data", CAPTIONS), root / "data", str(root / "tiny-qwen2-vl"),
                      image_max_pixels=config["image_max_pixels"])
    assert config["cutoff_len"] >= max(s.safe_cutoff() for s in spans)  # lfgen's own cutoff cuts no image
    for name, frozen in (("freeze_vision_tower-true", True), ("freeze_vision_tower-false", False)):
        out = root / "outputs" / "demo-vlm" / name
        scores = json.loads((out / "eval" / "lfgen_scores.json").read_text())
        predict = json.loads((out / "eval" / "predict_results.json").read_text())
        assert scores["samples_scored"] == 4 and scores["cider"] is not None and "predict_bleu-4" in predict
        with_vision = _trainable((out / "lfgen_train.log").read_text())
        ours = count_towers(str(root / "tiny-qwen2-vl"), lora_rank=8, freeze_vision_tower=frozen)
        assert with_vision == ours.total_trainable and (ours.trainable["vision"] > 0) is not frozen
    assert "CIDEr" in demo.stdout
    html = (root / "report.html").read_text()
    assert html.count('<img class="thumb" src="data:image/png;base64,') == 6  # 3 answers per run
    assert "[image: " in html and "<|image_pad|><|image_pad|>" not in html


def test_a_missing_image_is_refused_before_the_run_and_kills_the_run(tiny_vlm):
    """lfgen validate refuses the dataset whose picture is missing; run anyway, LlamaFactory stops in
    preprocessing and lfgen run records the failure."""
    config = _config(tiny_vlm, "qwen-missing", tiny_vlm.qwen2_vl, "qwen2_vl", dataset=MISSING)
    checked = lfgen(tiny_vlm.root, "validate", "--no-parser", str(config))
    assert checked.returncode == 1 and "1 image file(s) do not exist" in checked.stdout + checked.stderr
    start = time.perf_counter()
    result = lfgen(tiny_vlm.root, "run", str(config), "--quiet")
    print(f"\nlfgen run, a missing picture: {time.perf_counter() - start:.1f} s wall")
    log = (tiny_vlm.root / "outputs" / "qwen-missing" / "lfgen_train.log").read_text()
    assert result.returncode == 1 and "missing.png" in log and "FileNotFoundError" in log


def test_an_image_pillow_cannot_open_is_refused_before_the_run_and_kills_the_run(tiny_vlm):
    """A file that exists but is no image: lfgen validate refuses it like a missing one; run anyway, LlamaFactory
    stops in preprocessing (PIL.UnidentifiedImageError) and lfgen run records the failure."""
    rows = json.loads((tiny_vlm.data / f"{CAPTIONS}.json").read_text())
    (tiny_vlm.data / "images" / "corrupt.png").write_bytes(b"not a png")
    rows[1]["images"] = ["images/corrupt.png"]
    (tiny_vlm.data / "tiny_captions_corrupt.json").write_text(json.dumps(rows), encoding="utf-8")
    info = json.loads((tiny_vlm.data / "dataset_info.json").read_text())
    info["tiny_captions_corrupt"] = {**info[CAPTIONS], "file_name": "tiny_captions_corrupt.json"}
    (tiny_vlm.data / "dataset_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    config = _config(tiny_vlm, "qwen-corrupt", tiny_vlm.qwen2_vl, "qwen2_vl", dataset="tiny_captions_corrupt")
    checked = lfgen(tiny_vlm.root, "validate", "--no-parser", str(config))
    assert checked.returncode == 1 and "1 image file(s) are not images Pillow can read" in checked.stdout
    start = time.perf_counter()
    result = lfgen(tiny_vlm.root, "run", str(config), "--quiet")
    print(f"\nlfgen run, a picture Pillow cannot open: {time.perf_counter() - start:.1f} s wall")
    log = (tiny_vlm.root / "outputs" / "qwen-corrupt" / "lfgen_train.log").read_text()
    assert result.returncode == 1 and "UnidentifiedImageError" in log and "corrupt.png" in log


@pytest.mark.parametrize("family,template,last_image_token", [("qwen2_vl", "qwen2_vl", "<|image_pad|>"),
                                                               ("llava", "llava", "<image>")])
def test_spans_equal_llamafactorys_own_encoding(tiny_vlm, family, template, last_image_token):
    """Every row's prompt and answer tokens, and where its image tokens end, as LlamaFactory's template and
    plugin encode them (the cut check's premise)."""
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer

    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    model = tiny_vlm.qwen2_vl if family == "qwen2_vl" else tiny_vlm.llava
    tokenizer, processor = AutoTokenizer.from_pretrained(model), AutoProcessor.from_pretrained(model)
    processor.image_max_pixels, processor.image_min_pixels = 50176, 1024
    lf_template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template))
    image_id = tokenizer.convert_tokens_to_ids(last_image_token)
    rows = json.loads((tiny_vlm.data / f"{CAPTIONS}.json").read_text())
    spans = row_spans(_samples(tiny_vlm, CAPTIONS), tiny_vlm.data, str(model), image_max_pixels=50176)
    for row, span in zip(rows, spans):
        images = [Image.open(tiny_vlm.data / p) for p in row["images"]]
        messages = lf_template.mm_plugin.process_messages(row["messages"], images, [], [], processor)
        source, target = lf_template.encode_multiturn(tokenizer, messages, None, None)[0]
        last = max(i for i, token in enumerate(source) if token == image_id) + 1
        assert (span.source, span.target, span.image_end) == (len(source), len(target), last)
