"""Caption runs: CIDEr-D equal to coco-caption's reference scorer, image placeholders collapsed, the held-out rows'
pictures found in LlamaFactory's order and shown as thumbnails in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.layout import EVAL_CONFIG, EVAL_DIR, PREDICTIONS
from lfgen.results.captions import _split_order, cider_d, collapse, has_media, held_out, images_of, tokens
from lfgen.results.scoring import examples, score
from lfgen.tiny_vlm import CAPTIONS

# pycocoevalcap 1.2's CiderScorer(n=4, sigma=6.0) (pycocoevalcap/cider/cider_scorer.py, the CIDEr-D of
# coco-caption) on these captions, each joined from lfgen's tokens (its PTB tokenizer needs Java): the scores it
# printed, read from the wheel's own module on 2026-12-07.
SHAPES = (["a red circle on a blue background.", "a green square on a white background",
           "a blue triangle on a black background.", "a yellow circle on a red background"],
          [["a red circle on a blue background."], ["a green square on a yellow background."],
           ["a blue triangle on a black background."], ["a white square on a green background."]],
          6.119572829131652)
AERIAL = (["two planes parked at an airport", "many buildings and green trees", "a river runs through farmland",
           "a baseball field next to a road"],
          [["two white planes are parked at the airport", "several planes at an airport beside a runway"],
           ["many buildings with green trees around", "some buildings and many trees"],
           ["a river goes through green farmland", "farmland on both sides of a river"],
           ["a baseball field is next to a road", "a road runs beside a baseball field"]],
          2.9919782072186947)


@pytest.mark.parametrize("candidates,references,reference_score", [SHAPES, AERIAL], ids=["one-ref", "two-refs"])
def test_cider_d_equals_the_reference_scorer(candidates, references, reference_score):
    assert cider_d(candidates, references) == pytest.approx(reference_score, rel=1e-12)


def test_cider_d_basics():
    assert cider_d([], []) is None
    pair = ["red circle on blue", "green square near trees"]
    perfect = cider_d(pair, [[pair[0]], [pair[1]]])
    assert perfect == pytest.approx(10.0)  # identical captions of 4 words, no n-gram shared across images
    assert cider_d(["a red circle", "a blue square"], [["a red circle"], ["a blue square"]]) == pytest.approx(7.5)
    assert cider_d(pair, [[pair[0]], ["a river by a road"]]) < perfect  # the second answer matches nothing
    assert tokens("A Red, circle!") == ["a", "red", "circle"] and tokens("一只猫") == ["一", "只", "猫"]


def test_image_runs_collapse_and_mark_a_caption_eval():
    prompt = "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 132 + "<|vision_end|>Describe.<|im_end|>"
    assert collapse(prompt) == "<|im_start|>user\n<|vision_start|>[image: 132 tokens]<|vision_end|>Describe.<|im_end|>"
    assert collapse("USER: " + "<image>" * 576 + "\nWhat is it?") == "USER: [image: 576 tokens]\nWhat is it?"
    assert has_media(prompt) and not has_media("<|im_start|>user\nwhat is 2 + 2?<|im_end|>")
    rows = [{"prompt": prompt, "predict": "a red circle", "label": "a red circle"},
            {"prompt": prompt, "predict": "a blue square", "label": "a green square"}]
    assert score(rows)["cider"] == pytest.approx(cider_d(["a red circle", "a blue square"],
                                                         [["a red circle"], ["a green square"]]))
    assert "cider" not in score([{"prompt": "what is 2 + 2?", "predict": "4", "label": "4"}])


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
