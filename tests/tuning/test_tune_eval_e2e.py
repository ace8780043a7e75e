"""For real, on the CPU: `lfgen tune --metric predict_rouge-l`, each trial trained by real llamafactory-cli and
scored by LlamaFactory's own predict (ROUGE-L on the held-out rows), pruned by ASHA on the eval loss; the tuner
killed (-9) while it evaluates the first trial, then resumed: that trial is evaluated, not trained again.

A grid in a fixed order makes the outcome certain: lr 1e-3 learns a little, 1e-2 learns to end its answer
("\\n.", ROUGE-L 16.7 against 0), 1e-5 barely moves and is pruned at its first eval (ASHA keeps only the best
of three at that rung). The default tiny model (hidden 64) and test_e2e_eval.py's settings: 120 steps that
learn something in about 30 s a trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ..conftest import needs_llamafactory
from tests.helpers import e2e_env, lfgen, processes_of

pytestmark = [pytest.mark.slow, needs_llamafactory]
optuna = pytest.importorskip("optuna")

STEPS, EVAL_STEPS, NEW_TOKENS = 120, 30, 16
SETTINGS = {"max_steps": STEPS, "logging_steps": 10, "save_steps": STEPS, "eval_steps": EVAL_STEPS,
            "eval_strategy": "steps", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "val_size": 0.1, "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "overwrite_cache": True,
            "cutoff_len": 64}
SPACE = "lora_rank: {choices: [8]}\nlearning_rate: {choices: [1.0e-3, 1.0e-2, 1.0e-5]}\n"


def _eval_losses(out) -> dict[int, float]:
    """step -> eval_loss, as LlamaFactory logged them during training (trainer_log.jsonl)."""
    records = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    return {r["current_steps"]: r["eval_loss"] for r in records if "eval_loss" in r}


def test_a_rouge_study_scores_each_trial_with_llamafactory_and_a_kill_during_an_eval_resumes_it(tmp_path):
    from lfgen.tiny import make_dataset, make_model
    from lfgen.runs.store import read_rows
    from lfgen.runs.study import load_rows

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data")
    (project / "space.yaml").write_text(SPACE)
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    argv = [sys.executable, "-m", "lfgen", "tune", "m", "--base", "lightweight", "--model", "./tiny-model",
            "--dataset", "tiny_alpaca", "--dataset-dir", "data", *sets,
            "--space", "space.yaml", "--trials", "3", "--sampler", "grid", "--pruner", "asha",
            "--metric", "predict_rouge-l", "--max-new-tokens", str(NEW_TOKENS)]
    outputs = project / "outputs/m"
    first = outputs / "trial-000"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=project, env=e2e_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # trial-000 trained; LlamaFactory's predict started (its guard has exec'd: it names the eval dir)
        while not ((first / "eval/lfgen_eval.log").is_file() and processes_of(project, "outputs/m/trial-000/eval")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nkilled during trial-000's evaluation after {time.perf_counter() - start:.1f} s")
    assert not (first / "eval/lfgen_scores.json").exists(), "trial-000 was scored before the kill"
    deadline = time.monotonic() + 20
    while processes_of(project, "outputs/m/trial-000") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(project, "outputs/m/trial-000") == []  # the predict run died with the tuner
    trained = {name: (first / name).stat().st_mtime_ns for name in ("all_results.json", "trainer_log.jsonl",
                                                                   "adapter_model.safetensors")}

    changed = lfgen(project, "tune", "m", "--max-new-tokens", "8")  # scores are compared only if made alike
    assert changed.returncode == 1 and "already set up (max_new_tokens=16)" in changed.stderr, changed.stderr

    start = time.perf_counter()
    resumed = lfgen(project, "tune", "m", timeout=600)
    print(f"resume: {time.perf_counter() - start:.1f} s")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Traceback" not in resumed.stderr
    assert "trial-000: trained, but its evaluation did not finish; evaluating it now" in resumed.stderr
    assert {name: (first / name).stat().st_mtime_ns for name in trained} == trained  # not trained again
    assert read_rows(project / "experiments/m/state.sqlite")["trial-000"].attempts == 1

    rows = load_rows(project / "experiments/m")
    assert [(r["run"], r["state"]) for r in rows] == [("trial-000", "complete"), ("trial-001", "complete"),
                                                      ("trial-002", "pruned")]
    complete = [r for r in rows if r["state"] == "complete"]
    for row in complete:  # the objective is LlamaFactory's own ROUGE-L of the trial's generations
        eval_dir = outputs / row["run"] / "eval"
        predicted = json.loads((eval_dir / "predict_results.json").read_text())
        assert row["value"] == pytest.approx(predicted["predict_rouge-l"])
        scores = json.loads((eval_dir / "lfgen_scores.json").read_text())
        assert scores["samples_scored"] == 4 and scores["options"]["max_new_tokens"] == NEW_TOKENS
        assert "max_new_tokens: 16" in (eval_dir / "lfgen_eval.yaml").read_text()
    assert [r["value"] for r in complete] == [pytest.approx(0.0), pytest.approx(16.66665, abs=0.01)]
    pruned = rows[2]
    assert pruned["value"] is None and pruned["why"].startswith(f"pruned at step {EVAL_STEPS} (eval_loss ")
    assert pruned["steps"] < STEPS and not (outputs / "trial-002/eval").exists()  # a pruned trial is not evaluated

    # pruning acted on the eval loss: each trial reported LlamaFactory's eval losses, negated (a score is
    # maximised), at their steps; the one behind at the first rung was the one stopped
    storage = optuna.storages.RDBStorage(f"sqlite:///{project / 'experiments/m/study.db'}")
    study = optuna.load_study(study_name="m", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    for trial, row in zip(study.trials, rows):
        logged = _eval_losses(outputs / row["run"])
        # every eval but perhaps the last (the run may end before the runner's next poll sees it)
        assert set(logged) - {STEPS} <= set(trial.intermediate_values) <= set(logged), (logged, trial)
        assert trial.intermediate_values == pytest.approx({s: -logged[s] for s in trial.intermediate_values})
        assert row["intermediate"] == pytest.approx({s: logged[s] for s in trial.intermediate_values})
    first_rung = {row["run"]: row["intermediate"][EVAL_STEPS] for row in rows}
    assert max(first_rung, key=first_rung.get) == "trial-002"

    best = max(complete, key=lambda r: r["value"])
    assert best["run"] == "trial-001" and best["value"] > complete[0]["value"]
    text = (project / "experiments/m/best.yaml").read_text()
    assert "the best trial, trial-001 (predict_rouge-l 16.66" in text
    config = yaml.safe_load(text)
    # best.yaml trains again in outputs/m/best (issue 21: the trial's folder holds its finished results)
    assert config["output_dir"] == "outputs/m/best" and config["learning_rate"] == pytest.approx(1e-2)
    validated = lfgen(project, "validate", "experiments/m/best.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    status = {s["run"]: s["state"] for s in json.loads(lfgen(project, "status", "m", "--json").stdout)}
    assert status == {"trial-000": "done", "trial-001": "done", "trial-002": "pruned"}
