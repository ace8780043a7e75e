"""The verdict on real training, on the CPU, offline (issue 21): an experiment where no run learns ends with an
abstaining verdict, on stdout, in compare's JSON and in the report. (The one where a run clearly wins is lfgen demo:
tests/test_e2e.py::test_the_demo_names_a_real_winner_and_its_next_step_works_from_where_it_ran.)

No stand-ins: real LlamaFactory trains the tiny local model (lfgen.tiny) on its word-mapping task.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.helpers import lfgen

from .conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]


def test_no_run_learned_abstains_with_the_fix(tmp_path, tiny_model):
    """Two full fine-tunes at rates far too low to move the loss in 10 steps: neither is ranked, no best is
    named, and the verdict says what to fix first (raise learning_rate) wherever it is read."""
    from lfgen.tiny import CPU_SETTINGS, make_mapping_dataset

    shutil.copytree(tiny_model, tmp_path / "tiny-model")
    make_mapping_dataset(tmp_path / "data")
    settings = {**{k: v for k, v in CPU_SETTINGS.items() if k != "learning_rate"}, "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 1}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(tmp_path, "sweep", "lr", "1e-7", "2e-7", "--base", "auto", "--method", "full", "--model",
                  "./tiny-model", "--template", "qwen", "--dataset", "tiny_mapping", "--dataset-dir", "data",
                  "--precision", "fp32", "--name", "stuck", *sets)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    run = lfgen(tmp_path, "run", "stuck", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stuck: 2 done, 0 failed" in run.stderr

    compare = lfgen(tmp_path, "compare", "outputs/stuck")
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert re.search(r"stuck: no run learned: raise learning_rate, now [12]\.0e-7 first \(not-learning\)",
                     compare.stdout), compare.stdout[-3000:]
    assert " is best" not in compare.stdout and "sweep" not in compare.stdout.split("next:")[-1]
    rows = json.loads(lfgen(tmp_path, "compare", "outputs/stuck", "--format", "json").stdout)
    assert [(row["run"], row["diagnosis"], row["verdict"]) for row in sorted(rows, key=lambda r: r["run"])] == [
        ("lr-1e-7", "not-learning", "not ranked: not-learning"), ("lr-2e-7", "not-learning", "not ranked: not-learning")]
    assert all(row["experiment_verdict"].startswith("no run learned: ") for row in rows)
    for row in rows:  # measured, not planted: the loss barely moved
        assert abs(row["final_train_loss"] - row["final_eval_loss"]) < 0.5 and row["final_eval_loss"] > 5

    report = lfgen(tmp_path, "report", "outputs/stuck", "-o", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no run learned: raise learning_rate" in html and "is best" not in html
