"""lfgen eval for real, on the CPU, offline: 2 tiny runs trained, evaluated by LlamaFactory's predict
(BLEU-4, ROUGE), scored by lfgen, ranked by ROUGE for sweep --from, and a killed lfgen eval resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import needs_llamafactory
from tests.helpers import lfgen

pytestmark = [pytest.mark.slow, needs_llamafactory]
# lr 1e-2 for 120 steps learns to answer "the color is ..."; lr 1e-5 stays random: ROUGE-L tells them apart.
SETTINGS = {"max_steps": 120, "logging_steps": 10, "save_steps": 120, "eval_steps": 60, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "val_size": 0.1, "preprocessing_num_workers": 1,
            "dataloader_num_workers": 0, "overwrite_cache": True, "cutoff_len": 64}


def test_eval_scores_ranks_and_resumes(tmp_path):
    from lfgen.tiny import make_dataset, make_model

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data")
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    assert lfgen(project, "sweep", "lr", "1e-5", "1e-2", "--base", "lightweight", "--model", "./tiny-model",
                 "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny", *sets).returncode == 0
    start = time.perf_counter()
    trained = lfgen(project, "run", "tiny", "--quiet")
    print(f"\ntrain 2 runs: {time.perf_counter() - start:.1f} s")
    assert trained.returncode == 0, trained.stderr[-3000:]
    outputs = project / "outputs/tiny"
    runs = ["lr-1e-5", "lr-1e-2"]

    # A killed lfgen eval: kill -9 once the first run is scored and the second is generating.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lfgen", "eval", "experiments/tiny", "--max-new-tokens", "12"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = outputs / runs[0] / "eval", outputs / runs[1] / "eval"
    deadline = time.monotonic() + 300
    while not ((first / "lfgen_scores.json").is_file() and (second / "lfgen_eval.log").is_file()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"eval killed after {time.perf_counter() - start:.1f} s")
    scored_at = (first / "lfgen_scores.json").stat().st_mtime_ns
    assert not (second / "lfgen_scores.json").exists()

    start = time.perf_counter()
    resumed = lfgen(project, "eval", "experiments/tiny", "--max-new-tokens", "12")
    print(f"eval resumed (1 run): {time.perf_counter() - start:.1f} s")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{runs[0]}: already scored" in resumed.stderr and f"{runs[1]}: scored: 4 samples" in resumed.stderr
    assert (first / "lfgen_scores.json").stat().st_mtime_ns == scored_at  # never re-scored

    for run in runs:
        predictions = [json.loads(line) for line in (outputs / run / "eval/generated_predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 4  # val_size 0.1 of 40 rows: the held-out rows
        config = (outputs / run / "eval/lfgen_eval.yaml").read_text()
        assert "do_predict: true" in config and "val_size: 0.1" in config and "do_train: false" in config
    compare = lfgen(project, "compare", "experiments/tiny", "--format", "json")
    rows = {row["run"]: row for row in json.loads(compare.stdout)}
    for run in runs:
        assert all(isinstance(rows[run][key], float) for key in ("predict_rouge-l", "predict_bleu-4", "accuracy"))
        assert rows[run]["samples_scored"] == 4
    assert rows["lr-1e-2"]["predict_rouge-l"] > rows["lr-1e-5"]["predict_rouge-l"]
    sweep = lfgen(project, "sweep", "alpha", "--from", "experiments/tiny", "--metric", "predict_rouge-l", "--name", "next")
    assert sweep.returncode == 0, sweep.stderr
    assert "base: run lr-1e-2 of experiments/tiny (predict_rouge-l" in sweep.stderr + sweep.stdout

    again = lfgen(project, "eval", str(outputs / runs[0]), "--max-samples", "2", "--force", "--max-new-tokens", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{runs[0]}: scored: 2 samples" in again.stderr


def test_run_with_eval_scores_each_run_as_it_finishes(tmp_path):
    """lfgen run --eval: the run trains, then LlamaFactory's predict scores it in the same slot; a later
    lfgen eval finds it scored and leaves it alone."""
    from lfgen.tiny import make_dataset, make_model

    project = tmp_path
    make_model(project / "tiny-model")
    make_dataset(project / "data")
    settings = {**SETTINGS, "max_steps": 10, "save_steps": 10, "eval_steps": 5}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    assert lfgen(project, "sweep", "lr", "2e-4", "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "one",
                 *sets).returncode == 0
    start = time.perf_counter()
    done = lfgen(project, "run", "one", "--quiet", "--eval", "--max-new-tokens", "8")
    print(f"\ntrain + eval 1 run: {time.perf_counter() - start:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((project / "outputs/one/lr-2e-4/eval/lfgen_scores.json").read_text())
    assert scores["samples_scored"] == 4
    again = lfgen(project, "eval", "experiments/one")
    assert again.returncode == 0 and "lr-2e-4: already scored" in again.stderr, again.stderr
