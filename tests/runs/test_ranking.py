"""THE ranking: direction by metric name, non-finite values never win, ties keep the first, and the loss/score
disagreement is said only when the score really prefers another run."""

from __future__ import annotations

import math

import pytest

from lfgen.runs.metrics import lower_is_better
from lfgen.runs.ranking import best, disagreement, varying_keys


@pytest.mark.parametrize("metric,low", [("eval_loss", True), ("train_runtime", True), ("eval_perplexity", True),
                                        ("predict_rouge-l", False), ("accuracy", False)])
def test_direction_follows_the_metric_name(metric, low):
    assert lower_is_better(metric) is low


def test_nan_and_inf_never_win():
    items = [("nan", math.nan), ("inf", -math.inf), ("ok", 2.0), ("none", None), ("bool", True)]
    assert best(items, lambda i: i[1], "eval_loss") == ("ok", 2.0)
    assert best([("nan", math.nan)], lambda i: i[1], "eval_loss") is None


def test_scores_rank_high_and_ties_keep_the_first():
    items = [("a", 0.3), ("b", 0.5), ("c", 0.5)]
    assert best(items, lambda i: i[1], "predict_rouge-l") == ("b", 0.5)
    assert best(items, lambda i: i[1], "eval_loss") == ("a", 0.3)


def test_disagreement_only_when_the_score_prefers_another_run():
    scores = {"r4": {"predict_rouge-l": 0.0}, "r16": {"predict_rouge-l": 0.0}}
    items = list(scores.items())
    value = lambda item, metric: item[1].get(metric)  # noqa: E731
    assert disagreement(items, value, "r16", "final_eval_loss", 5.9) is None  # a tie at 0 says nothing
    scores["r4"]["predict_rouge-l"] = 0.4
    said = disagreement(list(scores.items()), value, "r16", "final_eval_loss", 5.9)
    assert said.startswith("best by final_eval_loss is r16 (5.9) but best by predict_rouge-l is r4 (0.4, against 0)")


def test_varying_keys_ignores_keys_that_differ_by_construction():
    configs = [{"lora_rank": 8, "output_dir": "a", "seed": 1}, {"lora_rank": 16, "output_dir": "b", "seed": 1}]
    assert varying_keys(configs) == ["lora_rank"]
    assert varying_keys(configs[:1], base={"lora_rank": 4, "seed": 1}) == ["lora_rank"]
    assert varying_keys(configs[:1]) == []
