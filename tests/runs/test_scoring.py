"""Accuracy scoring of LlamaFactory's generated_predictions.jsonl, on hand-written prediction files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.runs.scoring import (answer_kind, choice_of_answer, choice_of_label, examples, is_repetitive,
                                   normalise, read_eval, read_predictions, score)


def write_predictions(path: Path, pairs: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"prompt": f"<|im_start|>user\nq{i}<|im_end|>\n<|im_start|>assistant\n", "predict": p,
                         "label": label}) for i, (p, label) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_exact_match_counts_only_identical_answers(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [("27 + 12 = 39", "27 + 12 = 39\n"), ("27 + 12 = 40", "27 + 12 = 39\n"),
                                                     ("the color is red.", "the color is red.\n"),
                                                     ("the color is blue.", "the color is red.\n")])
    scores = score(read_predictions(path), generation_s=2.0)
    assert scores["samples_scored"] == 4
    assert scores["accuracy"] == 0.5
    assert scores["answer_kind"] is None and scores["answer_accuracy"] is None  # long-form: 4-5 word references
    assert scores["generated_tokens"] == 5 + 5 + 4 + 4 and scores["tokens_per_s"] == 9.0  # words without a tokenizer


def test_exact_match_is_normalised_for_case_and_whitespace(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [("  The Color   is\nRED. ", "the color is red.\n"),
                                                     ("the colour is red.", "the color is red.")])
    assert normalise("  The Color   is\nRED. ") == "the color is red."
    assert score(read_predictions(path))["accuracy"] == 0.5


@pytest.mark.parametrize(("label", "letter"), [("B", "b"), ("(c)", "c"), ("D.", "d"), ("a)", "a"), ("Paris", None),
                                               ("a cat", None)])
def test_choice_labels(label, letter):
    assert choice_of_label(label) == letter


def test_choice_accuracy_reads_the_first_choice_letter_of_the_answer(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [("The answer is (C).", "C"), ("B. because it is blue", "B\n"),
                                                     ("I think A, maybe B", "B"), ("a", "A"), ("no idea", "D")])
    assert choice_of_answer("The answer is (C).") == "c"
    scores = score(read_predictions(path))
    assert scores["answer_kind"] == "choice"
    assert scores["answer_accuracy"] == pytest.approx(3 / 5)  # C, B, a right; A (for B) and none (for D) wrong
    assert scores["accuracy"] == pytest.approx(1 / 5)  # only "a" == "A" matches exactly


def test_short_answers_score_the_first_answer_word(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [("39, because 27 + 12 is 39", "39"), ("Paris.", "paris"),
                                                     ("London", "Paris"), ("", "blue")])
    scores = score(read_predictions(path))
    assert answer_kind(["39", "paris", "Paris", "blue"]) == "short"
    assert scores["answer_kind"] == "short"
    assert scores["answer_accuracy"] == 0.5
    assert scores["accuracy"] == 0.0
    assert scores["empty_share"] == 0.25


def test_empty_and_repetitive_answers_are_counted(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [("\n\n\n\n", "a b c d e"), ("................", "a b c d e"),
                                                     ("the cat the cat the cat the cat the cat", "a b c d e"),
                                                     ("the color is green and the sky is blue today", "a b c d e")])
    assert is_repetitive("the cat the cat the cat the cat the cat")
    assert not is_repetitive("the color is green and the sky is blue today")
    scores = score(read_predictions(path))
    assert scores["empty_share"] == 0.25
    assert scores["repetitive_share"] == 0.5


def test_no_predictions_scores_nothing():
    scores = score([])
    assert scores["samples_scored"] == 0 and scores["accuracy"] is None


def test_a_broken_line_is_skipped(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"predict": "x", "label": "x"}\n{"predict": "y", "lab\n[1, 2]\n', encoding="utf-8")
    assert score(read_predictions(path))["samples_scored"] == 1


def test_read_eval_merges_llamafactory_and_lfgen_files(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "predict_results.json").write_text(json.dumps({"predict_rouge-l": 12.5, "predict_bleu-4": 3.0}))
    (eval_dir / "lfgen_scores.json").write_text(json.dumps({"accuracy": 0.25, "options": {"max_samples": 2}}))
    write_predictions(eval_dir / "generated_predictions.jsonl", [("x", "y")])
    assert read_eval(tmp_path) == {"predict_rouge-l": 12.5, "predict_bleu-4": 3.0, "accuracy": 0.25}
    assert examples(tmp_path) == [{"prompt": "q0", "predict": "x", "label": "y"}]
    assert read_eval(tmp_path / "nope") == {}
