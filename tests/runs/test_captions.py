"""CIDEr-D equal to coco-caption's reference scorer, image placeholders collapsed, caption evals marked."""

from __future__ import annotations

import pytest

from lfgen.runs.captions import cider_d, collapse, has_media, tokens
from lfgen.runs.scoring import score

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
