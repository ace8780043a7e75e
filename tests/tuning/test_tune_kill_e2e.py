"""For real, on the CPU: `kill -9` of the tuner while a trial trains the tiny model with real llamafactory-cli,
then `lfgen tune t` again. The trial's processes die with the tuner (the guard's PR_SET_PDEATHSIG), the finished
trial is never trained again (its files untouched, one attempt, its value kept), the killed one resumes from its
newest whole checkpoint with the same parameters, and the study ends with exactly --trials trials.

The default tiny model (hidden 64), not test_tune_e2e.py's wider one: nothing is pruned here, and on two shared
cores the wider one takes about 7 s a step, which would make this test ten minutes long."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import needs_llamafactory
from tests.helpers import e2e_env, lfgen, processes_of

pytestmark = [pytest.mark.slow, needs_llamafactory]
pytest.importorskip("optuna")

TRIALS, STEPS, SAVE = 4, 40, 10
SPACE = "lora_rank: {choices: [4, 8, 16]}\nlearning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"


def _steps(out: Path) -> list[int]:
    """The steps trainer_log.jsonl logged a training loss at, in order (a line being written is left out)."""
    try:
        lines = (out / "trainer_log.jsonl").read_text().splitlines()
    except OSError:
        return []
    steps = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            steps.append(record["current_steps"])
    return steps


def _whole_checkpoint(out: Path) -> int | None:
    from lfgen.training.rundir import broken

    whole = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if broken(p) is None]
    return max(whole) if whole else None


def _snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a finished run (checkpoints included), with its bytes and mtime."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_kill_9_mid_trial_then_resume_ends_with_exactly_n_trials_and_retrains_no_finished_one(tmp_path):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model
    from lfgen.runs.store import read_rows
    from lfgen.runs.study import load_rows

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data", rows=80)
    settings = {**CPU_SETTINGS, "max_steps": STEPS, "save_steps": SAVE, "eval_steps": STEPS, "logging_steps": 1,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "cutoff_len": 64}
    del settings["learning_rate"]  # the space searches it
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    (project / "space.yaml").write_text(SPACE)
    argv = [sys.executable, "-m", "lfgen", "tune", "t", "--base", "lightweight", "--model", "./tiny-model",
            "--dataset", "tiny_alpaca", "--dataset-dir", "data", *sets,
            "--space", "space.yaml", "--trials", str(TRIALS), "--pruner", "none", "--seed", "0"]
    outputs = project / "outputs/t"
    first, killed = outputs / "trial-000", outputs / "trial-001"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=project, env=e2e_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the kill below reaches the tuner only
    try:
        deadline = time.monotonic() + 300
        # trial-000 finished and told; trial-001 training a few steps past a whole checkpoint, far from its end
        while not ((first / "all_results.json").is_file() and _whole_checkpoint(killed) is not None
                   and max(_steps(killed), default=0) >= SAVE + 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        assert processes_of(project, "outputs/t/trial-001"), "found no process of trial-001 to outlive the tuner"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nkilled after {time.perf_counter() - start:.1f} s")
    assert not (killed / "all_results.json").exists(), "trial-001 finished before the kill; raise STEPS"
    deadline = time.monotonic() + 20  # the guard hears of the kill (SIGTERM), stops the run, SIGKILL after grace
    while processes_of(project, "outputs/t/trial-001") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(project, "outputs/t/trial-001") == []

    before = {row["run"]: row for row in load_rows(project / "experiments/t")}
    assert [(r["run"], r["state"]) for r in before.values()] == [("trial-000", "complete"), ("trial-001", "running")]
    finished = _snapshot(first)
    configs = {name: (project / f"experiments/t/runs/{name}.yaml").read_text() for name in before}
    resume_at = _whole_checkpoint(killed)  # what the resume must start from (a later, cut-short save is set aside)

    start = time.perf_counter()
    resumed = lfgen(project, "tune", "t", timeout=600)
    print(f"resume: {time.perf_counter() - start:.1f} s")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Traceback" not in resumed.stderr
    assert "1 trial(s) were running when the last lfgen tune stopped: trial-001" in resumed.stderr

    rows = load_rows(project / "experiments/t")
    assert [(r["run"], r["state"]) for r in rows] == [(f"trial-{n:03d}", "complete") for n in range(TRIALS)]
    after = {row["run"]: row for row in rows}
    # the finished trial: told once, never trained again, every file as it was
    assert after["trial-000"]["value"] == before["trial-000"]["value"]
    assert _snapshot(first) == finished
    state = read_rows(project / "experiments/t/state.sqlite")
    assert {name: (row.state, row.attempts) for name, row in state.items()} == \
        {"trial-000": ("done", 1), "trial-001": ("done", 2), "trial-002": ("done", 1), "trial-003": ("done", 1)}
    # the killed trial: the same parameters and config, resumed from its checkpoint (not re-run), to the end
    assert after["trial-001"]["params"] == before["trial-001"]["params"]
    assert {name: (project / f"experiments/t/runs/{name}.yaml").read_text() for name in before} == configs
    ran = yaml.safe_load((killed / "lfgen_run.yaml").read_text())
    assert ran["resume_from_checkpoint"] == f"outputs/t/trial-001/checkpoint-{resume_at}"
    assert ran["lora_rank"] == before["trial-001"]["params"]["lora_rank"]
    assert ran["learning_rate"] == pytest.approx(before["trial-001"]["params"]["learning_rate"])
    # not re-run: a re-run clears the output dir; this log still holds the first attempt's steps, past the
    # checkpoint, then the second attempt's from the step after it to the end
    steps = _steps(killed)
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[:restart] == list(range(1, steps[restart - 1] + 1)) and steps[restart - 1] > resume_at
    assert steps[restart:] == list(range(resume_at + 1, STEPS + 1))
    console = (killed / "lfgen_train.log").read_text()
    second = console[console.index("===== lfgen: attempt 2 of run trial-001"):]
    assert re.search(rf"(Resuming|Continuing) training from .*global step {resume_at}\b", second), second[-3000:]
    for name, row in after.items():  # each value is the run's own eval loss
        results = json.loads((outputs / name / "all_results.json").read_text())
        assert row["value"] == pytest.approx(results["eval_loss"])
    assert len({json.dumps(row["params"], sort_keys=True) for row in rows}) == TRIALS  # no proposal repeated

    best = yaml.safe_load((project / "experiments/t/best.yaml").read_text())
    winner = min(rows, key=lambda r: r["value"])
    # best.yaml trains again in outputs/t/best (issue 21: the trial's folder holds its finished results), and names
    # the winner in its header
    assert best["output_dir"] == "outputs/t/best"
    assert f"the best trial, {winner['run']} " in (project / "experiments/t/best.yaml").read_text()
    validated = lfgen(project, "validate", "experiments/t/best.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr
