"""lfgen tune on a full disk, on real tmpfs mounts (root only; skipped elsewhere). The stand-in llamafactory-cli
(tests/training/fake_llamafactory_cli.py) ONLY fills the trial's disk and fails as LlamaFactory does (fill-disk), or
trains slowly enough for the disk under experiments/ to fill meanwhile (evals)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.errors import RunError
from lfgen.runs.study import load_rows
from tests.helpers import Recorder, calls, fill_disk, modes, wait_for

pytest.importorskip("optuna")


def _options() -> BuildOptions:
    return BuildOptions.parse(model="fake/model", gpu="A800")


def _trains(project: Path) -> bool:
    from lfgen.runs.store import read_rows

    state = project / "experiments/t/state.sqlite"
    return state.is_file() and getattr(read_rows(state).get("trial-000"), "state", None) == "running"


def test_a_trial_that_failed_on_a_full_disk_does_not_count_and_is_tried_again_once_space_is_freed(
        project, monkeypatch, small_disk):
    """It counted against --trials, and the study went on asking trials that failed on the same full disk."""
    from lfgen.tuning.tuner import tune

    (project / "space.yaml").write_text("lora_rank: {choices: [8, 16, 32]}\n")
    small_disk(project / "outputs/t/trial-001", "256k")  # trial-001 trains on a disk of its own, and fills it
    modes(monkeypatch, **{"trial-001": "fill-disk"})
    with pytest.raises(RunError, match="trial-001 failed: the disk is full.*no new trial starts on a full disk"):
        tune("t", base="a800", options=_options(), space="space.yaml", trials=3, sampler="grid", pruner="none",
             reporter=Recorder())
    rows = load_rows(project / "experiments/t")
    assert [(r["run"], r["state"]) for r in rows] == [("trial-000", "complete"), ("trial-001", "failed")]
    assert rows[1]["why"].startswith("disk: the disk is full") and "it does not count" in rows[1]["why"]

    (project / "outputs/t/trial-001/checkpoint-1.bin").unlink()  # space freed
    modes(monkeypatch)
    result = tune("t", reporter=Recorder())
    assert [(r["run"], r["state"], r["params"]) for r in result.rows] == [
        ("trial-000", "complete", {"lora_rank": 8}), ("trial-001", "failed", {"lora_rank": 16}),
        ("trial-002", "complete", {"lora_rank": 16}), ("trial-003", "complete", {"lora_rank": 32})]
    assert len([c for c in calls(project) if not c.get("finished")]) == 4  # 3 counted trials and the failed one


def test_a_full_disk_under_experiments_while_a_trial_trains_is_one_clear_error_and_resumes(project, small_disk):
    """The study's write failed inside Optuna: StorageInternalError, "typically ... invalid data", a traceback."""
    small_disk(project / "experiments", "2m")
    (project / "space.yaml").write_text("lora_rank: {choices: [8, 16]}\n")
    env = {**os.environ, "FAKE_LF_MODES": '{"trial": "evals:0.4:1"}'}  # an eval loss reported at every step
    argv = [sys.executable, "-m", "lfgen", "tune", "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
            "--set", "max_steps=8", "--set", "eval_steps=1", "--set", "eval_strategy=steps", "--set", "val_size=0.1",
            "--space", "space.yaml", "--trials", "2", "--sampler", "grid", "--pruner", "none"]
    tuner = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _trains(project), what="trial-000 to train")
        filler = fill_disk(project / "experiments")
        _, err = tuner.communicate(timeout=120)
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert tuner.returncode == 1 and len(errors) == 1, err[-3000:]
    assert "cannot be written: the disk is full" in errors[0] and "experiments/t/" in errors[0], errors
    assert "Traceback" not in err and "StorageInternalError" not in err

    filler.unlink()
    resumed = subprocess.run([sys.executable, "-m", "lfgen", "tune", "t"], cwd=project, env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["state"] for r in load_rows(project / "experiments/t")] == ["complete", "complete"]
