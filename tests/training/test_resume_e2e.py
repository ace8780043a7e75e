"""For real, on the CPU (the tiny model, real LlamaFactory): SIGTERM mid-training stops the run and records it
interrupted (exit 143); with its newest checkpoint then broken (a truncated adapter, as a kill during a
save leaves it), the next `lfgen run` says so, resumes from the previous whole checkpoint and finishes.
"""

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
from tests.helpers import lfgen, wait_for
from .ray_head import pids_of  # processes whose command line names the run's output dir

pytestmark = [pytest.mark.slow, needs_llamafactory]

STEPS, SAVE = 100, 10  # a few steps a second on a busy CPU, about 30 on an idle one


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["current_steps"] for line in (out / "trainer_log.jsonl").read_text().splitlines()
            if '"loss"' in line]


def test_sigterm_then_a_broken_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model
    from lfgen.training.rundir import broken

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data")
    settings = {**CPU_SETTINGS, "max_steps": STEPS, "save_steps": SAVE, "eval_steps": STEPS, "logging_steps": 1}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(project, "sweep", "rank", "4", "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "r",
                  *sets)
    assert sweep.returncode == 0, sweep.stderr
    out = project / "outputs/r/rank-4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "lfgen", "run", "r", "--quiet"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # wait for the second checkpoint to be whole: SIGTERM during its save would break it for us
        # (CI caught one with no trainer_state.json yet), and this test breaks one itself, knowingly
        while not ((out / f"checkpoint-{2 * SAVE}").is_dir() and broken(out / f"checkpoint-{2 * SAVE}") is None):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    wait_for(lambda: pids_of(str(out)) == [], timeout=10, what="the run's processes to be gone")  # the guard
    # stopped llamafactory-cli and all it started
    status = json.loads(lfgen(project, "status", "r", "--json").stdout)
    assert status[0]["state"] == "interrupted"
    assert not (out / "all_results.json").exists(), "it finished before SIGTERM; raise STEPS"

    numbers = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    # SIGTERM may still land in a later save; the runner sets such a checkpoint aside too, so break the
    # newest *whole* one and expect the resume to go past it
    newest = max(n for n in numbers if broken(out / f"checkpoint-{n}") is None)
    adapter = out / f"checkpoint-{newest}/adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])  # half written
    result = lfgen(project, "run", "r", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    said = re.search(rf"checkpoint-{newest} is broken \(adapter_model\.safetensors is cut short\); set aside as "
                     rf"broken-checkpoint-{newest}; resuming from checkpoint-(\d+)", result.stderr)
    assert said, result.stderr[-3000:]
    resumed = int(said.group(1))
    assert resumed < newest and resumed in numbers
    used = yaml.safe_load((out / "lfgen_run.yaml").read_text())
    assert used["resume_from_checkpoint"] == f"outputs/r/rank-4/checkpoint-{resumed}"
    steps = _steps(out)
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart] == resumed + 1 and steps[-1] == STEPS  # it went on from there, to the end
    assert (out / "all_results.json").is_file() and (out / f"broken-checkpoint-{newest}").is_dir()
    assert json.loads(lfgen(project, "status", "r", "--json").stdout)[0]["state"] == "done"
