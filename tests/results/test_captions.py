"""The held-out rows' pictures found in LlamaFactory's order and shown as thumbnails in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.layout import EVAL_CONFIG, EVAL_DIR, PREDICTIONS
from lfgen.results.captions import _split_order, held_out, images_of
from lfgen.runs.scoring import examples
from lfgen.tiny_vlm import CAPTIONS


def test_the_val_size_split_is_datasets_own():
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"i": list(range(37))})
    for val_size, seed in ((0.1, 42), (0.25, 7), (5, 42)):
        split = data.train_test_split(test_size=val_size, seed=seed)
        assert _split_order(37, val_size, seed) == split["test"]["i"]


def _eval_dir(run: Path, root: Path, config: dict) -> Path:
    folder = run / EVAL_DIR
    folder.mkdir(parents=True)
    lines = "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items())
    (folder / EVAL_CONFIG).write_text(f"# lfgen eval\n# lfgen-root: {root}\n{lines}", encoding="utf-8")
    return folder


def test_thumbnails_of_the_held_out_rows_in_the_report(vlm_project, tmp_path):
    from lfgen.results import write_report

    rows = json.loads((vlm_project / "data" / f"{CAPTIONS}.json").read_text())
    run = vlm_project / "outputs" / "run"
    folder = _eval_dir(run, vlm_project, {"dataset": CAPTIONS, "dataset_dir": "data", "val_size": 0.25, "seed": 42})
    order = _split_order(len(rows), 0.25, 42)
    prompt = "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 48 + "<|vision_end|>Describe this image."
    lines = [{"prompt": prompt, "predict": "a red circle", "label": rows[i]["messages"][1]["content"]} for i in order]
    (folder / PREDICTIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [s.answer for s in held_out(folder)] == [line["label"] for line in lines]
    found = images_of(run, [line["label"] for line in lines])
    assert [p.name for paths in found for p in paths] == [Path(rows[i]["images"][0]).name for i in order]
    assert images_of(run, ["not the reference"] + [line["label"] for line in lines[1:]])[0] == []  # checked
    shown = examples(run)
    assert shown[0]["prompt"] == "<|vision_start|>[image: 48 tokens]<|vision_end|>Describe this image."
    (run / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 1, "loss": 1.0}) + "\n")
    (run / "all_results.json").write_text("{}")
    out = write_report(vlm_project / "outputs", tmp_path / "report.html")
    html = out.read_text()
    assert html.count('<img class="thumb" src="data:image/png;base64,') == min(3, len(order))
    assert "<|image_pad|><|image_pad|>" not in html and "[image: 48 tokens]" in html
