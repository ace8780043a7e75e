"""lfgen tune with the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py), ONLY for what a CPU
run cannot produce on demand or time: a NaN loss in one trial, and a kill -9 of the tuner at a chosen moment.
The real study, pruning included, trains the tiny model for real (tests/tuning/test_tune_e2e.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.tuning.tuner import tune

from tests.helpers import Recorder, calls, modes

pytest.importorskip("optuna")

SPACE = "lora_rank: {choices: [8, 16, 32, 64]}\nlearning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\n"


def _space(project: Path) -> str:
    (project / "space.yaml").write_text(SPACE)
    return "space.yaml"


def _options() -> BuildOptions:
    return BuildOptions.parse(model="fake/model", gpu="A800")


def test_a_nan_trial_fails_and_is_never_the_best(project, monkeypatch):
    modes(monkeypatch, **{"trial-001": "nan-at:3"})  # the stand-in: a NaN loss a CPU run cannot produce at will
    result = tune("t", base="a800", options=_options(), space=_space(project), trials=3, pruner="none",
                  reporter=Recorder())
    states = {row["run"]: row["state"] for row in result.rows}
    assert states == {"trial-000": "complete", "trial-001": "failed", "trial-002": "complete"}
    failed = next(row for row in result.rows if row["run"] == "trial-001")
    assert failed["value"] is None and failed["why"].startswith("nan:")
    assert result.best["run"] != "trial-001"
    best = (project / "experiments/t/best.yaml").read_text()
    assert "lfgen tune t: the best trial" in best and "output_dir: outputs/t/trial-00" in best


def test_resume_after_kill_9_ends_with_exactly_n_trials_and_reruns_no_finished_one(project, monkeypatch):
    modes(monkeypatch, trial="slow:0.02")  # 200 steps of 0.02 s: the kill lands mid-trial
    _space(project)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-m", "lfgen", "tune", "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
            "--space", "space.yaml", "--trials", "4", "--pruner", "none"]
    proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len([c for c in calls(project) if c.get("finished")]) < 2 or \
            len([c for c in calls(project) if not c.get("finished")]) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the tuner only: the trial's guard hears of it through PR_SET_PDEATHSIG
    proc.wait()
    resumed = subprocess.run([sys.executable, "-m", "lfgen", "tune", "t"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "were running when the last lfgen tune stopped: trial-002" in resumed.stderr
    started = [Path(json.loads(json.dumps(c))["argv"][2]).parent.name for c in calls(project) if not c.get("finished")]
    assert sorted(set(started)) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert started.count("trial-000") == 1 and started.count("trial-001") == 1  # finished trials never re-run
    from lfgen.runs.study import load_rows

    rows = load_rows(project / "experiments/t")
    assert [row["state"] for row in rows] == ["complete"] * 4
    assert "Traceback" not in resumed.stderr


def test_staged_runs_seed_000s_stages_each_from_the_last_best(project, monkeypatch):
    """The stand-in here only for speed: 14 runs of orchestration (stage order, bases handed on); what a trial
    is and how it trains is covered for real by tests/tuning/test_tune_e2e.py."""
    from lfgen.tuning.staged import tune_staged

    lines = tune_staged("fam", base="a800", options=_options(), reporter=Recorder())
    assert [line.split(":")[0].strip() for line in lines[1::2]][:5] == \
        ["fam-1-rank", "fam-2-alpha", "fam-3-dropout", "fam-4-target", "fam"]
    import yaml

    alpha = yaml.safe_load((project / "experiments/fam-2-alpha/experiment.yaml").read_text())
    assert alpha["base"] == str((project / "experiments/fam-1-rank/best.yaml").resolve())
    assert (project / "experiments/fam/best.yaml").is_file()
    assert len(yaml.safe_load((project / "experiments/fam/experiment.yaml").read_text())["runs"]) == 1
