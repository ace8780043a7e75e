"""For real, on the CPU: a study of several trials on a small local model trained by real llamafactory-cli,
pruned by ASHA on the eval_loss lines of trainer_log.jsonl. The model is wider than lfgen.tiny's default
(hidden 512, 4 layers) so that a step is slower than the runner's poll and the pruner can act
(../shared/research/ray-optuna.md section 3)."""

from __future__ import annotations

import json

import pytest
import yaml

from ..conftest import needs_llamafactory
from tests.helpers import lfgen

pytestmark = [pytest.mark.slow, needs_llamafactory]
pytest.importorskip("optuna")

MAX_STEPS, TRIALS = 8, 6


def test_a_pruned_study_finishes_and_its_best_config_validates(tmp_path):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    make_model(tmp_path / "tiny-model", hidden=512, layers=4)
    make_dataset(tmp_path / "data", rows=80)
    settings = {**CPU_SETTINGS, "max_steps": MAX_STEPS, "eval_steps": 1, "logging_steps": 1, "save_steps": 100,
                "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "val_size": 0.2,
                "eval_strategy": "steps"}
    del settings["learning_rate"]  # the space searches it
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    (tmp_path / "space.yaml").write_text("lora_rank: {choices: [4, 8, 16]}\n"
                                         "learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\n")
    tuned = lfgen(tmp_path, "tune", "t", "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", *sets,
                  "--space", "space.yaml", "--trials", str(TRIALS), "--pruner", "asha", "--seed", "0", timeout=1200)
    assert tuned.returncode == 0, tuned.stderr[-4000:]
    assert "Traceback" not in tuned.stderr
    status = json.loads(lfgen(tmp_path, "status", "t", "--json").stdout)
    assert len(status) == TRIALS
    from lfgen.runs.study import load_rows

    rows = load_rows(tmp_path / "experiments/t")
    assert len(rows) == TRIALS and {row["state"] for row in rows} <= {"complete", "pruned"}
    pruned = [row for row in rows if row["state"] == "pruned"]
    assert pruned, f"no trial was pruned: {rows}"
    assert all(row["steps"] < MAX_STEPS for row in pruned), pruned
    assert {s["run"]: s["state"] for s in status}[pruned[0]["run"]] == "pruned"
    table = lfgen(tmp_path, "status", "t")  # KeyError: 'pruned' before issue 18, as the listing below
    assert table.returncode == 0 and "pruned" in table.stdout, table.stderr[-2000:]
    listing = json.loads(lfgen(tmp_path, "status", "--json").stdout)
    assert [(row["experiment"], row["pruned"]) for row in listing] == [("t", len(pruned))]
    used = sum(row["steps"] for row in rows)
    print(f"steps used {used} of {TRIALS * MAX_STEPS}; pruned {len(pruned)}")
    best = tmp_path / "experiments/t/best.yaml"
    assert yaml.safe_load(best.read_text())["lora_rank"] in (4, 8, 16)
    validated = lfgen(tmp_path, "validate", "experiments/t/best.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    for command in (("compare", "experiments/t"), ("report", "experiments/t", "-o", "report.html")):
        shown = lfgen(tmp_path, *command)
        assert shown.returncode == 0, shown.stderr[-3000:]
    assert "pruned" in lfgen(tmp_path, "compare", "experiments/t").stdout
