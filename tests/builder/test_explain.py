"""lfgen explain: lfgen's own files (with hand edits), anyone's files, presets; the --json shape."""

from __future__ import annotations

import json

import pytest

import yaml

from ..conftest import LF_EXAMPLES


def explain_json(runner, cli, *args):
    result = runner.invoke(cli, ["explain", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_shape(runner, cli):
    data = explain_json(runner, cli, "a800", "--gpu", "4090")
    assert set(data) >= {"config", "decisions", "warnings", "suggestions", "samples", "gpu", "source"}
    for decision in data["decisions"]:
        assert set(decision) >= {"key", "value", "rule", "reason", "source"}
    assert {d["key"] for d in data["decisions"]} == set(data["config"])
    assert data["gpu"]["name"] == "RTX 4090"


def test_every_value_of_a_generated_file_has_its_rule(runner, cli, tmp_path):
    path = tmp_path / "qv.yaml"
    assert runner.invoke(cli, ["preset", "lightweight", "--gpu", "4090", "--samples", "3000", "-o", str(path)]).exit_code == 0
    data = explain_json(runner, cli, str(path))
    by_key = {d["key"]: d for d in data["decisions"]}
    assert set(by_key) == set(yaml.safe_load(path.read_text()))
    assert by_key["per_device_train_batch_size"]["rule"] == "R-HW-HEADROOM"  # the estimator, on a known model
    assert by_key["gradient_accumulation_steps"]["rule"] == "R-HW-BATCH"
    assert by_key["lora_dropout"]["rule"] == "R-DATA-DROPOUT" and "3,000" in by_key["lora_dropout"]["reason"]
    assert by_key["lora_dropout"]["alternative"].startswith("lora_dropout 0.0 (seed 003")
    assert data["samples"] == 3000
    assert not any(d["rule"] == "FILE" for d in data["decisions"])


def test_model_and_memory_in_the_json(runner, cli):
    data = explain_json(runner, cli, "a800", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "A800")
    assert data["model"]["architecture"] == "qwen2" and data["model"]["params"] > 7e9
    assert data["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert data["trainable_params"] == 161_480_704  # r64 on every linear layer of Qwen2.5-7B (PEFT's count)
    assert set(data["memory_gib"]) >= {"weights", "lora", "gradients", "optimizer", "activations", "logits",
                                       "overhead", "total"}
    assert data["gpu"]["name"] == "A800" and data["gpu"]["memory_gib"] == 80 and data["fits"] is True


def test_seventy_b_on_a_24gb_gpu_says_it_does_not_fit_and_what_would(runner, cli):
    result = runner.invoke(cli, ["explain", "a800", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "4090"])
    assert result.exit_code == 0
    assert "does not fit" in result.stdout and "ZeRO-3" in result.stderr + result.stdout


def test_explain_an_unknown_model_is_an_error(runner, cli):
    result = runner.invoke(cli, ["explain", "a800", "--model", "my-org/nothing-like-it"])
    assert result.exit_code == 1 and "not a local folder and not in lfgen's offline catalog" in result.stderr
    assert "config.json" in result.stderr


def test_hand_edits_are_named(runner, cli, tmp_path):
    path = tmp_path / "a.yaml"
    runner.invoke(cli, ["preset", "a800", "-o", str(path)])
    text = path.read_text().replace("learning_rate: 7.5e-5", "learning_rate: 3.0e-4").replace(
        "save_total_limit: 3  # LF-SKELETON\n", "") + "seed: 7\n"
    path.write_text(text)
    data = explain_json(runner, cli, str(path))
    by_key = {d["key"]: d for d in data["decisions"]}
    assert by_key["learning_rate"]["rule"] == "FILE" and "edited by hand; lfgen wrote 7.5e-05 (R-LR-RANK" in \
        by_key["learning_rate"]["reason"]
    assert by_key["seed"]["reason"] == "added by hand"
    assert any("save_total_limit was removed by hand" in w for w in data["warnings"])


def test_user_value_wins_and_explain_says_so(runner, cli):
    data = explain_json(runner, cli, "a800", "--lr", "3e-4")
    lr = next(d for d in data["decisions"] if d["key"] == "learning_rate")
    assert lr["rule"] == "USER" and "overrides R-LR-RANK, which gives 7.5e-05" in lr["reason"]


def test_llamafactory_example_file_is_explained(runner, cli, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    data = explain_json(runner, cli, "examples/train_lora/qwen3_lora_sft.yaml")
    by_key = {d["key"]: d for d in data["decisions"]}
    # R-LR-RANK: the 4B model's 1e-3 (its name says 4B) x 32 / alpha 16 (LlamaFactory's 2 x rank 8), capped at 5e-4
    assert by_key["learning_rate"]["rule"] == "FILE" and "overrides R-LR-RANK, which gives 0.0005" in \
        by_key["learning_rate"]["reason"] and "capped at 0.0005" in by_key["learning_rate"]["reason"]
    assert by_key["lora_rank"]["value"] == 8 and by_key["lr_scheduler_type"]["rule"] == "R-SCHED"
    assert by_key["report_to"]["value"] == "none"  # the file's value stands
    suggested = {d["key"] for d in data["suggestions"]}
    assert {"weight_decay", "val_size"} <= suggested
    # LlamaFactory's own defaults are not rules the file fails to follow (issue 15)
    assert not {"max_grad_norm", "dataset_dir", "disable_gradient_checkpointing", "lora_alpha"} & suggested
    assert any(w.startswith("R-HW-BATCH") and "effective batch 1 x 8" in w for w in data["warnings"])


def test_explain_text_output(runner, cli):
    result = runner.invoke(cli, ["explain", "balanced", "--gpu", "T4"])
    assert result.exit_code == 0
    for fragment in ("per_device_train_batch_size", "R-HW-BATCH", "R-HW-PRECISION", "no bf16"):
        assert fragment in result.stdout


@pytest.mark.parametrize("command", [["explain"], ["sweep", "rank", "--name", "from-file"]])
def test_a_file_base_with_a_data_size_is_explained_not_a_traceback(runner, cli, tmp_path, monkeypatch, command):
    """LlamaFactory's own example with --samples: the dropout rule's warning named a preset that is not there."""
    monkeypatch.chdir(tmp_path)
    example = LF_EXAMPLES / "examples/train_lora/qwen3_lora_sft.yaml"
    args = [command[0], *command[1:2], *(["--base", str(example)] if command[0] == "sweep" else [str(example)]),
            *command[2:], "--samples", "500"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    if command[0] == "explain":
        assert f"{example} has LlamaFactory's default dropout 0; seed 002's band for N = 500 samples is 0.2" \
            in result.stderr


def test_a_preset_target_note_does_not_survive_another_target(runner, cli):
    """Phi-3 fuses q, k and v: the lightweight preset's qv gets a note, --target all does not."""
    args = ["explain", "lightweight", "--model", "microsoft/Phi-3-mini-4k-instruct"]
    assert "qkv_proj" in runner.invoke(cli, args).stderr
    result = runner.invoke(cli, [*args, "--target", "all"])
    assert result.exit_code == 0 and "qkv_proj" not in result.stderr, result.stderr


def test_a_vision_language_config_is_explained_per_tower(tmp_path, monkeypatch):
    # A local Qwen2-VL with LoRA on both towers and the merger trained whole: the estimate counts every tower
    # as LlamaFactory resolves them (it once failed: "additional_target: 'merger' matches no module").
    pytest.importorskip("transformers")
    from lfgen.builder.explain import explain

    from ..conftest import make_vlm_folder

    monkeypatch.chdir(tmp_path)
    make_vlm_folder(tmp_path / "tiny-qwen2-vl")
    (tmp_path / "vlm.yaml").write_text(
        "model_name_or_path: tiny-qwen2-vl\nstage: sft\ndo_train: true\nfinetuning_type: lora\nlora_target: all\n"
        "freeze_vision_tower: false\nadditional_target: merger\ntemplate: qwen2_vl\noutput_dir: out\n", encoding="utf-8")
    result = explain("vlm.yaml")
    estimate = result.estimate
    assert estimate.model["architecture"] == "qwen2_vl" and estimate.trainable_params == 47_360
    assert estimate.notes[0].startswith("trainable per tower as LlamaFactory resolves it (lora): Text: 16.4K, "
                                        "Vision: 6.14K, Projector: 24.8K (47,360 in all")


def test_a_file_that_sets_logging_steps_is_not_said_to_lack_it(tmp_path, monkeypatch):
    """Issue 21: explain of a sweep --from run warned "the file does not set logging_steps" on a file that sets it (a
    rule the data asked for replaced the base file's value, and the check took that for "not set")."""
    import yaml

    from lfgen.builder.explain import explain
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments.make import make_sweep
    from tests.conftest import make_dataset_dir
    from tests.results.lf_files import Curves, decay, write_run

    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "data", rows=300)
    options = BuildOptions.parse(model="fake/model", dataset=["my_sft"], dataset_dir="data", template="qwen")
    ranks = make_sweep("rank", ["8", "16"], options=options, name="rs")
    for run in ranks.manifest.runs:
        config = yaml.safe_load((ranks.path / run.config).read_text())
        write_run(tmp_path / run.output_dir, Curves(decay(20), {100: 1.0}, logging_steps=10), config=config)
    alphas = make_sweep("alpha", [], from_="experiments/rs", name="as")
    path = alphas.path / alphas.manifest.runs[0].config
    assert "logging_steps: " in path.read_text()
    assert not [w for w in explain(str(path)).warnings if "does not set" in w]
