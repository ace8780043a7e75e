"""The estimate's settings from a LlamaFactory config's DeepSpeed file (lfgen/builder/estimates.py zero_settings,
R-MULTI-DS): the stage and CPU offload from the JSON where it can be read, from LlamaFactory's file names where not."""

from __future__ import annotations

import json

import pytest

from lfgen.builder.estimates import cannot_estimate, settings_for, zero_settings
from lfgen.builder.multi_gpu import packaged

NAMES = {"ds_z2_config.json": (2, "none", "none"), "ds_z3_config.json": (3, "none", "none"),
         "ds_z2_offload_config.json": (2, "cpu", "none"), "ds_z3_offload_config.json": (3, "cpu", "cpu")}


@pytest.mark.parametrize("name", list(NAMES))
def test_llamafactorys_files_by_name_and_by_content_agree(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such file here: the name decides
    by_name = zero_settings({"deepspeed": f"examples/deepspeed/{name}"})
    by_content = zero_settings({"deepspeed": str(packaged(name))})
    assert by_name == by_content == dict(zip(("zero_stage", "offload_optimizer", "offload_param"), NAMES[name]))


def test_a_users_json_is_read_for_its_stage_and_devices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": {
        "stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/local"}, "offload_param": {"device": "none"}}}))
    assert zero_settings({"deepspeed": "mine.json"}) == {"zero_stage": 3, "offload_optimizer": "nvme",
                                                         "offload_param": "none"}
    values = settings_for({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "deepspeed": "mine.json"}, 8)
    assert values["offload_optimizer"] == "nvme" and values["zero_stage"] == 3


def test_an_unreadable_json_falls_back_to_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds_z3_offload_config.json").write_text("{not json")
    assert zero_settings({"deepspeed": "ds_z3_offload_config.json"})["offload_param"] == "cpu"
    assert zero_settings({"deepspeed": {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}}) \
        == {"zero_stage": 2, "offload_optimizer": "cpu", "offload_param": "none"}


def test_deepspeed_offload_is_estimated_and_fsdp_offload_is_not():
    assert cannot_estimate({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
                            "deepspeed": "ds_z3_offload_config.json"}) == ""
    why = cannot_estimate({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "fsdp": "full_shard auto_wrap offload"})
    assert "FSDP's CPU offload" in why and "ds_z3_offload_config.json" in why
