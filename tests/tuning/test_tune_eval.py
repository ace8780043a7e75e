"""--metric predict_rouge-l: each trial is scored by lfgen eval after it trains (the runner's after_done), and the
objective reads the score from <run>/eval/; pruning stays on the eval loss. No training here: the evaluation is
stubbed, what is checked is the wiring (which metrics need lfgen eval, what the hook calls, what it says)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lfgen.tuning import tuner


@pytest.mark.parametrize("metric, expected", [("predict_rouge-l", True), ("predict_bleu-4", True),
                                              ("accuracy", True), ("eval_loss", False), ("train_loss", False)])
def test_which_metrics_are_lfgen_evals(metric, expected):
    assert tuner.needs_eval(metric) is expected


def test_the_hook_evaluates_the_trial_in_its_slot_and_the_objective_reads_the_score(tmp_path: Path, monkeypatch):
    import lfgen.training.evaluate as evaluation
    from lfgen.experiments.finished import _metric

    calls, said = [], []

    def fake(store, name, run_dir, options, *, gpus=None, force=False):
        calls.append((name, run_dir, gpus, options.temperature))
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "eval" / "predict_results.json").write_text(json.dumps({"predict_rouge-l": 41.5}))
        return evaluation.Outcome(name, "scored", {"predict_rouge-l": 41.5})

    monkeypatch.setattr(evaluation, "evaluate_recorded", fake)
    hook = tuner.evaluator(tmp_path, said.append)
    run = tmp_path / "outputs/t/trial-000"
    run.mkdir(parents=True)
    (run / "all_results.json").write_text(json.dumps({"eval_loss": 1.2}))
    hook(object(), SimpleNamespace(name="trial-000", output_dir="outputs/t/trial-000"), [0])
    assert calls == [("trial-000", run, [0], 0.0)] and not said
    assert _metric(run, "predict_rouge-l") == 41.5


def test_a_failed_evaluation_is_said_and_leaves_no_score(tmp_path: Path, monkeypatch):
    import lfgen.training.evaluate as evaluation

    said = []
    monkeypatch.setattr(evaluation, "evaluate_recorded",
                        lambda store, name, run_dir, options, **_: evaluation.Outcome(name, "failed", detail="oom"))
    tuner.evaluator(tmp_path, said.append)(object(), SimpleNamespace(name="trial-001", output_dir="o"), None)
    assert said == ["trial-001: lfgen eval failed (oom); the trial has no score"]
