"""Every shape trains for real on the CPU, offline: a DPO, a KTO, a full fine-tune and a pre-training run, each written
by `lfgen preset --stage/--method`, trained by `lfgen run` and read back by `lfgen compare` (issue 19).

No stand-ins: LlamaFactory trains the tiny local model (lfgen.tiny) on tiny pairwise, KTO and text sets built here;
each run is 6 optimizer steps with an evaluation at 3 and 6, so the whole module stays near two minutes on 2 cores.
The configs keep the shape's own values (the DPO and KTO rates are R-STAGE-LR's); only the CPU sizing is set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.helpers import lfgen

from .conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]

# What a 6-step CPU run needs on top of the shape's own values (no learning rate: that is the shape's).
CPU = {"max_steps": 6, "logging_steps": 1, "save_steps": 3, "eval_steps": 3, "per_device_train_batch_size": 2,
       "gradient_accumulation_steps": 1, "val_size": 0.1, "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
       "overwrite_cache": True, "cutoff_len": 64}
SHAPES = {  # name -> (lfgen preset options, dataset)
    "dpo": (["--stage", "dpo", "--rank", "8"], "tiny_dpo"),
    "kto": (["--stage", "kto", "--rank", "8"], "tiny_kto"),
    "full": (["--method", "full"], "tiny_alpaca"),
    "pt": (["--stage", "pt", "--rank", "8"], "tiny_text"),
}


@pytest.fixture(scope="module")
def shapes_project(tmp_path_factory):
    """The four configs written by lfgen preset, each trained by lfgen run, and lfgen compare's rows of them."""
    from lfgen.tiny import make_dataset, make_kto_dataset, make_model, make_pairwise_dataset, make_text_dataset

    project = tmp_path_factory.mktemp("shapes")
    make_model(project / "tiny-model")
    for make in (make_dataset, make_pairwise_dataset, make_kto_dataset, make_text_dataset):
        make(project / "data")
    sets = [arg for key, value in CPU.items() for arg in ("--set", f"{key}={str(value).lower()}"
                                                           if isinstance(value, bool) else f"{key}={value}")]
    configs = {}
    for name, (options, dataset) in SHAPES.items():
        made = lfgen(project, "preset", "auto", *options, "--model", "./tiny-model", "--dataset", dataset,
                     "--dataset-dir", "data", "--output-dir", f"outputs/{name}", *sets,
                     "-o", f"{name}.yaml")
        assert made.returncode == 0, made.stderr
        configs[name] = yaml.safe_load((project / f"{name}.yaml").read_text())
        trained = lfgen(project, "run", f"{name}.yaml", "--quiet")
        assert trained.returncode == 0, trained.stderr[-3000:]
    compared = lfgen(project, "compare", "outputs", "--format", "json")
    assert compared.returncode == 0, compared.stderr
    rows = {Path(row["path"]).name: row for row in json.loads(compared.stdout)}
    return project, configs, rows


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def test_dpo_is_written_trained_and_compared_with_its_reward_columns(shapes_project):
    project, configs, rows = shapes_project
    config = configs["dpo"]
    assert (config["stage"], config["pref_loss"], config["pref_beta"], config["learning_rate"]) == \
        ("dpo", "sigmoid", 0.1, 5e-6)  # R-STAGE-BETA, R-STAGE-LR
    assert (project / "outputs/dpo/adapter_model.safetensors").is_file()
    row = rows["dpo"]
    assert row["state"] == "done" and _finite(row["final_eval_loss"])
    assert 0.0 <= row["eval_rewards/accuracies"] <= 1.0 and _finite(row["eval_rewards/margins"])  # LlamaFactory's


def test_kto_is_written_trained_and_compared_with_its_margin(shapes_project):
    project, configs, rows = shapes_project
    config = configs["kto"]
    assert (config["stage"], config["pref_beta"], config["learning_rate"]) == ("kto", 0.1, 5e-6)
    assert "pref_loss" not in config  # KTO has no pref_loss of its own
    row = rows["kto"]
    assert row["state"] == "done" and _finite(row["eval_rewards/margins"])
    assert row["eval_rewards/accuracies"] is None  # KTO logs no accuracy (R-STAGE-METRIC)


def test_full_fine_tune_writes_no_lora_keys_and_saves_the_whole_model(shapes_project):
    project, configs, rows = shapes_project
    config = configs["full"]
    assert config["finetuning_type"] == "full" and config["learning_rate"] == 1e-5  # R-METHOD-LR
    assert not {"lora_rank", "lora_alpha", "lora_dropout", "lora_target"} & set(config)  # R-METHOD-KEYS
    out = project / "outputs/full"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_model.safetensors").exists()
    assert rows["full"]["state"] == "done" and _finite(rows["full"]["final_eval_loss"])


def test_pre_training_reads_plain_text_with_no_template(shapes_project):
    project, configs, rows = shapes_project
    config = configs["pt"]
    assert config["stage"] == "pt" and "template" not in config  # R-STAGE-PT: no chat markup
    log = (project / "outputs/pt/lfgen_train.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert rows["pt"]["state"] == "done" and _finite(rows["pt"]["final_eval_loss"])
