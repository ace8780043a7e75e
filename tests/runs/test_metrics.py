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


def test_check_takes_the_registrys_names_and_any_predict_and_refuses_a_typo_with_a_did_you_mean():
    from lfgen.errors import InputError

    for name in ("eval_loss", "eval_rewards/accuracies", "eval_accuracy", "answer_accuracy", "predict_meteor"):
        assert metrics.check(name) == name
    for name, says in (("eval_los", "did you mean: eval_loss"), ("bleu", "--metric: 'bleu' is not a metric"),
                       ("predict_", "not a metric")):
        with pytest.raises(InputError, match=says):
            metrics.check(name)


def test_every_shapes_objective_is_in_the_registry():
    """The default --metric of each stage (R-STAGE-METRIC) passes the check."""
    from lfgen.resources import load_data

    objectives = {entry["objective"] for entry in load_data("shapes.yaml")["stages"].values()}
    assert objectives and all(metrics.check(name) for name in objectives)


def _killed_in_its_final_evaluation(run, *, at_end=True, best_at_end=False):
    run.mkdir()
    (run / "all_results.json").write_text(json.dumps({"train_loss": 1.1}))  # save_metrics("train") only
    lines = [{"current_steps": 6, "total_steps": 6, "loss": 1.0}, {"current_steps": 6 if at_end else 4,
                                                                    "total_steps": 6, "eval_loss": 0.75}]
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "lfgen_run.yaml").write_text(f"load_best_model_at_end: {'true' if best_at_end else 'false'}\n")


def test_an_eval_metric_missing_from_all_results_is_the_one_logged_at_the_last_step(tmp_path):
    """A run killed during its final evaluation (training done, all_results.json without eval metrics): the eval
    logged at its last step is the same weights on the same rows."""
    _killed_in_its_final_evaluation(tmp_path / "a")
    assert metrics.value(tmp_path / "a", "eval_loss") == 0.75
    _killed_in_its_final_evaluation(tmp_path / "b", at_end=False)  # logged at step 4 of 6: another model
    assert metrics.value(tmp_path / "b", "eval_loss") is None
    _killed_in_its_final_evaluation(tmp_path / "c", best_at_end=True)  # the final evaluation scores the best one
    assert metrics.value(tmp_path / "c", "eval_loss") is None
    assert metrics.value(tmp_path / "a", "train_loss") == 1.1 and metrics.value(tmp_path / "a", "loss") is None
