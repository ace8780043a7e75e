"""lfgen tune pulls its trials (lfgen/tuning/trials.py): Optuna is asked for the next trial the moment a slot frees,
so a pruned trial's GPU starts the next trial at once while the other GPU still trains. The stand-in
llamafactory-cli (evals mode: an eval loss at every step) gives each trial a timing and a loss the test chooses:
ONLY the timing and the pruning decision are stand-ins; a real study trains in tests/tuning/test_tune_e2e.py."""

from __future__ import annotations

import json

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.tuning.tuner import tune
from tests.helpers import Recorder, calls, fake_gpus

pytest.importorskip("optuna")

SPACE = "lora_rank: {choices: [8, 16]}\n"


def _options() -> BuildOptions:
    return BuildOptions.parse(model="fake/model", gpu="A800", set={"max_steps": 8, "eval_steps": 1,
                                                                    "eval_strategy": "steps", "val_size": 0.1})


def test_a_pruned_trials_gpu_starts_the_next_trial_at_once_while_the_other_gpu_trains(project, monkeypatch):
    fake_gpus(project, 2)
    (project / "space.yaml").write_text(SPACE)
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({
        "trial-000": "evals:0.05:1",  # eval loss 1 + 1/step, quick: frees GPU 0 first
        "trial-001": "evals:0.8:-5",  # the best at every rung (never pruned), slow: GPU 1 busy for about 6 s
        "trial-002": "evals:0.3:9",  # far behind at its first rung: ASHA prunes it
        "trial-003": "evals:0.05:0"}))
    result = tune("t", base="a800", options=_options(), space="space.yaml", trials=4, sampler="random",
                  pruner="asha", gpus=[0, 1], reporter=Recorder())
    states = {row["run"]: row["state"] for row in result.rows}
    assert len(states) == 4 and (states["trial-001"], states["trial-002"]) == ("complete", "pruned"), result.rows
    starts = {c["argv"][2].split("/")[-2]: c for c in calls(project) if "finished" not in c}
    ends = {c["argv"][2].split("/")[-2]: c["end"] for c in calls(project) if "finished" in c}
    gpu = {name: call["env"]["CUDA_VISIBLE_DEVICES"] for name, call in starts.items()}
    assert gpu == {"trial-000": "0", "trial-001": "1", "trial-002": "0", "trial-003": "0"}
    # A fixed batch of two would have waited for trial-001 before asking for trial-002 and trial-003:
    assert starts["trial-002"]["start"] < ends["trial-001"] and starts["trial-003"]["start"] < ends["trial-001"]
    assert 0 <= starts["trial-003"]["start"] - ends["trial-002"] < 2.0  # the pruned trial's GPU, given on at once
    pruned = next(row for row in result.rows if row["run"] == "trial-002")
    assert pruned["why"].startswith("pruned at step") and pruned["steps"] < 8
