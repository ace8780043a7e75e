"""Two real runs sharing a tokenized_path, two slots: the second starts once the first has written the folder, and
loads it (lfgen/training/tokenized.py). No stand-in llamafactory-cli: real LlamaFactory tokenizes and trains the tiny
local model on the CPU; only nvidia-smi is the tests' stand-in, so that --gpus 0,1 makes two slots on this GPU-less
machine (CUDA_VISIBLE_DEVICES names a GPU torch does not have: each run trains on the CPU)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.helpers import e2e_env, fake_gpus, lfgen

from ..conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]


def test_the_second_run_starts_once_the_first_wrote_the_shared_tokenized_data(tmp_path, tiny_model):
    import shutil

    from lfgen.tiny import CPU_SETTINGS, make_dataset

    shutil.copytree(tiny_model, tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    settings = {**CPU_SETTINGS, "tokenized_path": "outputs/tiny/tokenized"}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(tmp_path, "sweep", "rank", "4", "8", "--base", "lightweight", "--model", "./tiny-model",
                  "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny", *sets)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (tmp_path / "bin").mkdir()
    fake_gpus(tmp_path, 2)
    env = {**e2e_env()}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    run = subprocess.run([sys.executable, "-m", "lfgen", "run", "tiny", "--gpus", "0,1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tiny: 2 done, 0 failed" in run.stderr
    folder = tmp_path / "outputs/tiny/tokenized"
    assert f"rank-8: waits for run rank-4 to write tokenized_path {folder}" in run.stderr + run.stdout

    with sqlite3.connect(tmp_path / "experiments/tiny/state.sqlite") as db:
        events = {(run_name, kind): at for run_name, at, kind in db.execute("SELECT run, time, kind FROM events")}
    saved = [path.stat().st_mtime for path in folder.rglob("*") if path.is_file()]
    assert {path.relative_to(folder).as_posix() for path in folder.rglob("*.json")} == {
        "dataset_dict.json", "train/state.json", "train/dataset_info.json", "validation/state.json",
        "validation/dataset_info.json"}
    assert events[("rank-4", "started")] < min(saved)  # rank-4 wrote it ...
    assert ("rank-8", "waiting") in events and max(saved) <= events[("rank-8", "started")]  # ... rank-8 waited
    # and did not wait for rank-4's end: rank-4 still had to load the model and train 10 steps after saving
    assert events[("rank-8", "started")] < events[("rank-4", "done")]
    logs = {name: (tmp_path / "outputs/tiny" / name / "lfgen_train.log").read_text(encoding="utf-8")
            for name in ("rank-4", "rank-8")}
    assert "Tokenized dataset is saved at outputs/tiny/tokenized" in logs["rank-4"]
    assert "Loaded tokenized dataset from outputs/tiny/tokenized" in logs["rank-8"]
    assert "Tokenized dataset is saved" not in logs["rank-8"]
    for name in ("rank-4", "rank-8"):
        assert (tmp_path / "outputs/tiny" / name / "all_results.json").is_file()
        assert (tmp_path / "outputs/tiny" / name / "adapter_model.safetensors").is_file()
