"""--metric predict_rouge-l: each trial is scored by lfgen eval after it trains (the runner's after_done), and the
objective reads the score from <run>/eval/; pruning stays on the eval loss. No training here: lfgen's evaluation
is stubbed, what is checked is the wiring (which metrics need lfgen eval, the generation settings a study records,
what the hook calls and says, how a score study's trials read back). The real study, trained and evaluated by
LlamaFactory, is tests/tuning/test_tune_eval_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lfgen.errors import InputError
from lfgen.tuning import scoring


def test_the_hook_evaluates_the_trial_in_its_slot_and_the_objective_reads_the_score(tmp_path: Path, monkeypatch):
    import lfgen.training.evaluate as evaluation
    from lfgen.runs.metrics import value

    calls, said = [], []

    def fake(store, name, run_dir, options, *, gpus=None, force=False):
        calls.append((name, run_dir, gpus, options.temperature, options.max_new_tokens, options.max_samples))
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "eval" / "predict_results.json").write_text(json.dumps({"predict_rouge-l": 41.5}))
        return evaluation.Outcome(name, "scored", {"predict_rouge-l": 41.5})

    monkeypatch.setattr(evaluation, "evaluate_recorded", fake)
    outcomes = {}
    hook = scoring.evaluator(tmp_path, said.append, scoring.options_of({"max_samples": 3, "max_new_tokens": 16}),
                             outcomes)
    run = tmp_path / "outputs/t/trial-000"
    run.mkdir(parents=True)
    (run / "all_results.json").write_text(json.dumps({"eval_loss": 1.2}))
    hook(object(), SimpleNamespace(name="trial-000", output_dir="outputs/t/trial-000"), [0])
    assert calls == [("trial-000", run, [0], 0.0, 16, 3)] and not said
    assert outcomes["trial-000"].status == "scored"  # the tuner tells only a trial evaluated (or scored before)
    assert value(run, "predict_rouge-l") == 41.5


def test_a_failed_evaluation_is_said_and_leaves_no_score(tmp_path: Path, monkeypatch):
    import lfgen.training.evaluate as evaluation

    said = []
    monkeypatch.setattr(evaluation, "evaluate_recorded",
                        lambda store, name, run_dir, options, **_: evaluation.Outcome(name, "failed", detail="oom"))
    scoring.evaluator(tmp_path, said.append)(object(), SimpleNamespace(name="trial-001", output_dir="o"), None)
    assert said == ["trial-001: lfgen eval failed (oom); the trial has no score"]


def test_a_score_study_records_its_generation_settings_and_a_loss_study_refuses_them():
    assert scoring.eval_settings("predict_rouge-l", None, None) == {"max_samples": None, "max_new_tokens": 128}
    assert scoring.eval_settings("accuracy", 50, 16) == {"max_samples": 50, "max_new_tokens": 16}
    assert scoring.eval_settings("eval_loss", None, None) == {}
    with pytest.raises(InputError, match=r"^--max-new-tokens: only with an lfgen eval --metric .*metric is eval_loss$"):
        scoring.eval_settings("eval_loss", None, 16)
    with pytest.raises(InputError, match=r"^--max-samples: must be at least 1 \(got 0\)$"):
        scoring.eval_settings("predict_rouge-l", 0, None)


