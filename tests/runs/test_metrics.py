"""The metric registry (presets/metrics.yaml): one direction and one producing command per metric, read by the
ranking, the tuner and compare alike."""

from __future__ import annotations

import json

import pytest

from lfgen.runs import metrics


@pytest.mark.parametrize("name, low, by", [
    ("eval_loss", True, "train"), ("train_runtime", True, "train"), ("eval_perplexity", True, "train"),
    ("eval_accuracy", False, "train"),  # not listed: LlamaFactory's compute_accuracy, written by training
    ("predict_rouge-l", False, "eval"), ("predict_bleu-4", False, "eval"), ("predict_meteor", False, "eval"),
    ("accuracy", False, "eval"), ("answer_accuracy", False, "eval"), ("tokens_per_s", False, "eval"),
    ("eval_time_s", True, "eval"), ("empty_share", True, "eval"), ("repetitive_share", True, "eval"),
])
def test_direction_and_command(name, low, by):
    assert (metrics.lower_is_better(name), metrics.metric(name).by, metrics.needs_eval(name)) == (low, by, by == "eval")


def test_answer_accuracy_is_lfgen_evals_so_tune_evaluates_its_trials():
    """tune --metric answer_accuracy never evaluated its trials: a second list of eval metrics in tuning/scoring.py
    knew only accuracy and predict_*; the study then failed every trial with no answer_accuracy to read."""
    from lfgen.tuning.scoring import eval_settings

    assert eval_settings("answer_accuracy", 20, None) == {"max_samples": 20, "max_new_tokens": 128}
    assert "answer_accuracy" in metrics.eval_names()


def test_the_shipped_table_is_well_formed_and_the_loss_judges_are_scores():
    table = metrics.table()
    assert all(m.known for m in table.values())
    assert metrics.judging_loss() == ["predict_rouge-l", "accuracy"]
    assert all(not metrics.lower_is_better(name) and metrics.needs_eval(name) for name in metrics.judging_loss())


def test_a_malformed_entry_is_named(monkeypatch):
    monkeypatch.setattr(metrics, "load_data", lambda _: {"metrics": {"x": {"better": "up", "by": "train"}}})
    metrics.table.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"presets/metrics.yaml: x: needs better: lower\|higher"):
            metrics.table()
    finally:
        metrics.table.cache_clear()


def test_a_runs_value_merges_training_results_and_eval_scores(tmp_path):
    run = tmp_path / "run"
    assert metrics.value(run, "eval_loss") is None  # not finished
    run.mkdir()
    (run / "all_results.json").write_text(json.dumps({"eval_loss": 1.25, "flag": True}))
    assert metrics.value(run, "eval_loss") == 1.25 and metrics.value(run, "flag") is None
    assert metrics.value(run, "predict_rouge-l") is None  # not evaluated
    (run / "eval").mkdir()
    (run / "eval/predict_results.json").write_text(json.dumps({"predict_rouge-l": 41.5}))
    (run / "eval/lfgen_scores.json").write_text(json.dumps({"answer_accuracy": 0.5, "options": {"max_samples": 2}}))
    assert (metrics.value(run, "predict_rouge-l"), metrics.value(run, "answer_accuracy")) == (41.5, 0.5)
    (run / "all_results.json").write_text("[1, 2]")
    assert metrics.value(run, "eval_loss") is None
