"""For real, on the CPU: the issue's reproduction of a trial that finished just before `kill -9` of the tuner. Poll
for the first trial's all_results.json (real llamafactory-cli training the tiny model), kill -9 the tuner at once,
run `lfgen tune t` again. The trial is recorded done from its own files and told its value; it is never trained
again and its results are never overwritten (the old resume from checkpoint-6 of 6 trained zero steps and rewrote
all_results.json: train_loss 0.0, a runtime of milliseconds). The precise moment, held open: the stand-in in
tests/training/test_finished_before_kill.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import needs_llamafactory
from tests.helpers import e2e_env, lfgen, processes_of

pytestmark = [pytest.mark.slow, needs_llamafactory]
pytest.importorskip("optuna")

STEPS = 6


def _last_eval(out: Path) -> tuple[int, float]:
    """The step and eval_loss of the last eval line in trainer_log.jsonl."""
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if '"eval_loss"' in line]
    return lines[-1]["current_steps"], lines[-1]["eval_loss"]


def test_a_trial_that_finished_before_kill_9_is_told_from_its_files_and_never_trained_again(tmp_path):
    import sys

    from lfgen.runs.store import read_rows
    from lfgen.runs.study import load_rows
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data", rows=40)
    settings = {**CPU_SETTINGS, "max_steps": STEPS, "save_steps": STEPS, "eval_steps": STEPS, "logging_steps": 1,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "cutoff_len": 64}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    (project / "space.yaml").write_text("lora_rank: {choices: [4, 8]}\n")
    argv = [sys.executable, "-m", "lfgen", "tune", "t", "--base", "lightweight", "--model", "./tiny-model",
            "--template", "qwen", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--precision", "fp32", *sets,
            "--space", "space.yaml", "--sampler", "grid", "--trials", "2", "--pruner", "none"]
    first = project / "outputs/t/trial-000"
    tuner = subprocess.Popen(argv, cwd=project, env=e2e_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # its own group: the kill reaches the tuner only
    try:
        deadline = time.monotonic() + 300
        while not (first / "all_results.json").is_file():
            assert tuner.poll() is None and time.monotonic() < deadline, tuner.communicate()[1][-3000:]
            time.sleep(0.02)
        os.kill(tuner.pid, signal.SIGKILL)
        tuner.wait()
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
    deadline = time.monotonic() + 30  # the guard hears of the kill and stops the run's tree
    while processes_of(project, "outputs/t/trial-000") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(project, "outputs/t/trial-000") == []
    assert read_rows(project / "experiments/t/state.sqlite")["trial-000"].state == "running"  # the race, as it was
    results = (first / "all_results.json").read_bytes()
    trained = json.loads(results)
    print(f"\nkilled with all_results.json holding {sorted(trained)}")
    assert trained["train_loss"] > 0 and (first / f"checkpoint-{STEPS}").is_dir()

    resumed = lfgen(project, "tune", "t", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Traceback" not in resumed.stderr
    assert "trial-000: it finished before its last runner" in resumed.stderr

    assert (first / "all_results.json").read_bytes() == results  # never overwritten by a zero-step resume
    assert "attempt 2 of run trial-000" not in (first / "lfgen_train.log").read_text()
    state = read_rows(project / "experiments/t/state.sqlite")
    assert {name: (row.state, row.attempts) for name, row in state.items()} == \
        {"trial-000": ("done", 1), "trial-001": ("done", 1)}
    rows = {row["run"]: row for row in load_rows(project / "experiments/t")}
    assert [row["state"] for row in rows.values()] == ["complete", "complete"]
    step, logged = _last_eval(first)
    assert step == STEPS
    assert rows["trial-000"]["value"] == pytest.approx(trained.get("eval_loss", logged))
    # The value of a trial killed in its final evaluation is the eval loss logged at its last step: the same as
    # that final evaluation gives, as the trial that ran to its end shows.
    second = json.loads((project / "outputs/t/trial-001/all_results.json").read_text())
    assert _last_eval(project / "outputs/t/trial-001") == (STEPS, pytest.approx(second["eval_loss"]))
    assert rows["trial-001"]["value"] == pytest.approx(second["eval_loss"])
    # compare showed the zero-step resume's figures (train_loss 0.0, a runtime of milliseconds) and a varying
    # resume_from_checkpoint column: it shows the trial's own training now, from the run's files.
    compare = lfgen(project, "compare", "experiments/t", "--format", "json")
    assert compare.returncode == 0, compare.stderr[-3000:]
    table = {row["run"]: row for row in json.loads(compare.stdout)}
    row = table["trial-000"]
    assert (row["runtime_s"], row["samples_per_s"]) == \
        pytest.approx((trained["train_runtime"], trained["train_samples_per_second"])), row
    assert row["final_train_loss"] > 0 and row["state"] == "done", row
    assert not any("resume_from_checkpoint" in row for row in table.values())
