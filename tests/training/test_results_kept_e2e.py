"""Another door onto a live run, with real training: while `lfgen run tiny` trains the tiny model on the CPU,
`lfgen run experiments/tiny/runs/rank-4.yaml` is refused and the live run's files are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import needs_llamafactory
from tests.helpers import lfgen

pytestmark = [pytest.mark.slow, needs_llamafactory]


def test_the_run_config_of_a_live_real_run_is_refused(tmp_path):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    make_model(tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    settings = {**CPU_SETTINGS, "max_steps": 400, "save_steps": 50}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(tmp_path, "sweep", "rank", "4", "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny",
                  *sets)
    assert sweep.returncode == 0, sweep.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    first = subprocess.Popen([sys.executable, "-m", "lfgen", "run", "tiny", "--quiet"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "outputs/tiny/rank-4/trainer_log.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and log.stat().st_size) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        second = lfgen(tmp_path, "run", "experiments/tiny/runs/rank-4.yaml", "--quiet")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert "is already being trained into by lfgen pid" in second.stderr and str(first.pid) in second.stderr
        size = log.stat().st_size
        deadline = time.monotonic() + 120
        while log.stat().st_size == size:  # the live run goes on in its files
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
