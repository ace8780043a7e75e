"""--metric predict_rouge-l (any of lfgen eval's metrics): each trial is evaluated after it trains, by the runner's
evaluations (a child in the trial's slot, polled with the other runs), and the study is told the score it wrote;
pruning stays on the eval loss. The stand-in llamafactory-cli writes the predictions here (its predict: two
answers, one right); the real study, trained and evaluated by LlamaFactory, is tests/tuning/test_tune_eval_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.errors import InputError
from lfgen.tuning import scoring
from lfgen.tuning.tuner import tune
from tests.helpers import Recorder, calls, wait_for

pytest.importorskip("optuna")

SPACE = "lora_rank: {choices: [8, 16]}\n"


def _tune(project, metric, trials=2, **kwargs):
    (project / "space.yaml").write_text(SPACE)
    recorder = Recorder()
    result = tune("t", base="a800", options=BuildOptions.parse(model="fake/model", gpu="A800"), space="space.yaml",
                  trials=trials, pruner="none", metric=metric, reporter=recorder, **kwargs)
    return result, recorder


def test_a_score_study_records_its_generation_settings_and_a_loss_study_refuses_them():
    assert scoring.eval_settings("predict_rouge-l", None, None) == {"max_samples": None, "max_new_tokens": 128}
    assert scoring.eval_settings("accuracy", 50, 16) == {"max_samples": 50, "max_new_tokens": 16}
    assert scoring.eval_settings("eval_loss", None, None) == {}
    with pytest.raises(InputError, match=r"^--max-new-tokens: only with an lfgen eval --metric .*metric is eval_loss$"):
        scoring.eval_settings("eval_loss", None, 16)
    with pytest.raises(InputError, match=r"^--max-samples: must be at least 1 \(got 0\)$"):
        scoring.eval_settings("predict_rouge-l", 0, None)


def test_each_trial_is_evaluated_in_its_slot_with_the_studys_settings_and_told_its_score(project):
    result, recorder = _tune(project, "predict_rouge-l", max_new_tokens=16)
    assert [(row["state"], row["value"]) for row in result.rows] == [("complete", 50.0), ("complete", 50.0)]
    predicts = [c for c in calls(project) if c.get("predict") and "finished" not in c]
    assert [c["argv"][2].split("/")[-3] for c in predicts] == ["trial-000", "trial-001"]
    config = (project / "outputs/t/trial-000/eval/lfgen_eval.yaml").read_text()
    assert "max_new_tokens: 16" in config and "do_sample: false" in config
    assert [e[1:3] for e in recorder.events if e[0] == "evaluated"] == [("trial-000", "scored"), ("trial-001", "scored")]


def test_answer_accuracy_evaluates_each_trial(project):
    """It was missing from tuning's own list of eval metrics: the trials trained, were never evaluated, and failed
    with no answer_accuracy to read. The stand-in's answers: "2" for 2 (right), "4" for 3 (wrong): 0.5."""
    result, _ = _tune(project, "answer_accuracy", trials=1)
    assert [(row["state"], row["value"]) for row in result.rows] == [("complete", 0.5)]
    assert len([c for c in calls(project) if c.get("predict") and "finished" not in c]) == 1


def test_a_failed_evaluation_fails_its_trial_only(project, monkeypatch):
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({"trial-001/eval": "predict-crash"}))
    result, recorder = _tune(project, "predict_rouge-l")
    failed = result.rows[1]
    assert (result.rows[0]["state"], failed["state"], failed["value"]) == ("complete", "failed", None)
    assert failed["why"].startswith("lfgen eval failed (run trial-001: evaluation failed (llamafactory-cli exit 1)")
    assert result.best["run"] == "trial-000"
    said = [e for e in recorder.events if e[0] == "evaluated" and e[1] == "trial-001"]
    assert said and said[0][2] == "failed"


def test_a_trial_killed_during_its_evaluation_is_evaluated_on_resume_not_trained_again(project, monkeypatch):
    (project / "space.yaml").write_text(SPACE)
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({"trial-000/eval": "slow:1"}))  # its predict takes 200 s
    argv = [sys.executable, "-m", "lfgen", "tune", "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
            "--space", "space.yaml", "--trials", "2", "--pruner", "none", "--metric", "predict_rouge-l"]
    proc = subprocess.Popen(argv, cwd=project, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        predict = wait_for(lambda: [c for c in calls(project) if c.get("predict")], what="trial-000's evaluation")
        os.kill(proc.pid, signal.SIGKILL)  # the tuner only; its predict child dies with it (PR_SET_PDEATHSIG)
        proc.wait()
        wait_for(lambda: not os.path.exists(f"/proc/{predict[0]['pid']}") or
                 open(f"/proc/{predict[0]['pid']}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
                 timeout=10, what="the predict to die with the tuner")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    monkeypatch.setenv("FAKE_LF_MODES", "{}")
    resumed = subprocess.run([sys.executable, "-m", "lfgen", "tune", "t"], cwd=project, capture_output=True, text=True,
                             env=dict(os.environ), timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial-000: trained, but its evaluation did not finish; evaluating it now" in resumed.stderr
    trained = [c["argv"][2].split("/")[-2] for c in calls(project) if not c.get("predict") and "finished" not in c]
    assert trained == ["trial-000", "trial-001"]  # trial-000 was never trained again
    from lfgen.runs.study import load_rows

    assert [(row["state"], row["value"]) for row in load_rows(project / "experiments/t")] == [
        ("complete", 50.0), ("complete", 50.0)]
