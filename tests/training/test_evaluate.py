"""lfgen eval's predict config (pure), its held-out rows and its errors; the real run is in tests/test_e2e_eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.errors import InputError
from lfgen.tiny import make_dataset
from lfgen.training.evaluate import EvalOptions, held_out, predict_config, require_finished
from lfgen.launch import predict_argv

TRAIN = {"model_name_or_path": "./tiny-model", "template": "qwen", "finetuning_type": "lora", "stage": "sft",
         "do_train": True, "dataset": "tiny_alpaca", "dataset_dir": "data", "val_size": 0.1, "cutoff_len": 128,
         "lora_rank": 8, "learning_rate": 1e-3, "output_dir": "outputs/x/r", "per_device_eval_batch_size": 2,
         "eval_strategy": "steps", "report_to": "tensorboard"}


def test_predict_config_keeps_the_runs_model_data_and_split(tmp_path):
    values = predict_config(TRAIN, tmp_path / "run", tmp_path, EvalOptions())
    assert values == {
        "model_name_or_path": "./tiny-model", "template": "qwen", "finetuning_type": "lora",
        "adapter_name_or_path": str((tmp_path / "run").resolve()), "stage": "sft", "do_train": False,
        "do_predict": True, "predict_with_generate": True, "dataset_dir": "data", "cutoff_len": 128,
        "dataset": "tiny_alpaca", "val_size": 0.1, "output_dir": str((tmp_path / "run").resolve() / "eval"),
        "overwrite_output_dir": True, "report_to": "none", "per_device_eval_batch_size": 2, "max_new_tokens": 128,
        "do_sample": False}


def test_temperature_and_batch_size_are_passed(tmp_path):
    values = predict_config(TRAIN, tmp_path, tmp_path, EvalOptions(batch_size=16, max_new_tokens=8, temperature=0.7))
    assert (values["per_device_eval_batch_size"], values["max_new_tokens"], values["do_sample"],
            values["temperature"]) == (16, 8, True, 0.7)


def test_a_full_finetune_is_its_own_model(tmp_path):
    values = predict_config({**TRAIN, "finetuning_type": "full"}, tmp_path / "run", tmp_path, EvalOptions())
    assert values["model_name_or_path"] == str((tmp_path / "run").resolve()) and "adapter_name_or_path" not in values


def test_eval_dataset_is_used_and_capped(tmp_path):
    config = {**TRAIN, "val_size": None, "eval_dataset": "tiny_eval", "max_samples": 100}
    assert held_out(config, tmp_path, None, "r") == {"eval_dataset": "tiny_eval", "max_samples": 100}
    assert held_out(config, tmp_path, 5, "r") == {"eval_dataset": "tiny_eval", "max_samples": 5}


def test_max_samples_cuts_a_val_size_split_only_below_its_size(tmp_path):
    make_dataset(tmp_path / "data", rows=40)  # val_size 0.1 of 40 rows: 4 held out
    assert held_out(TRAIN, tmp_path, 3, "r")["val_size"] == 3  # the first 3 of the same permutation
    assert held_out(TRAIN, tmp_path, 4, "r")["val_size"] == 0.1
    assert held_out(TRAIN, tmp_path, 50, "r")["val_size"] == 0.1  # never more rows than training held out
    assert held_out({**TRAIN, "max_samples": 20}, tmp_path, 50, "r") == {"dataset": "tiny_alpaca", "max_samples": 20,
                                                                         "val_size": 0.1}
    with pytest.raises(InputError, match="run r: --max-samples 1 cannot cut a val_size split"):
        held_out(TRAIN, tmp_path, 1, "r")


def test_a_smaller_int_val_size_holds_out_a_subset_of_the_same_rows():
    """The premise of held_out(): datasets' train_test_split takes its test rows from the front of one
    permutation of (seed, rows), so val_size N < the held-out count gives held-out rows only."""
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_list([{"i": i} for i in range(80)])
    full = rows.train_test_split(test_size=0.1, seed=42)
    cut = rows.train_test_split(test_size=3, seed=42)
    assert set(cut["test"]["i"]) < set(full["test"]["i"])
    assert cut["test"]["i"] == full["test"]["i"][:3]


def run_dir(tmp_path: Path, config: dict, files: tuple[str, ...]) -> Path:
    out = tmp_path / "outputs" / "r"
    out.mkdir(parents=True)
    for name in files:
        (out / name).write_text("{}")
    (out / "lfgen_run.yaml").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(("files", "config", "message"), [
    ((), TRAIN, r"run r: not finished \(.* has no all_results.json\); finish it with `lfgen run`"),
    (("all_results.json",), TRAIN, "run r: .* has no trained adapter or model; train it again"),
    (("all_results.json", "adapter_model.safetensors"), {**TRAIN, "val_size": 0.0},
     "run r: has no held-out data .*; set val_size"),
    (("all_results.json", "adapter_model.safetensors"), {**TRAIN, "stage": "dpo"},  # issue 19: held-out pairs
     r"run r: lfgen eval generates answers to held-out SFT rows, and a LoRA DPO run's .* judge it by "
     r"eval_rewards/accuracies in lfgen compare"),
    (("all_results.json", "model.safetensors"), {**TRAIN, "stage": "pt", "finetuning_type": "full"},
     "a full-parameter pre-training run's held-out rows have no single reference answer"),
])
def test_a_run_that_cannot_be_evaluated_is_one_clear_error(tmp_path, files, config, message):
    out = run_dir(tmp_path, config, files)
    with pytest.raises(InputError, match=message):
        require_finished(out, config, "r")


def test_cli_errors_name_the_run_and_the_fix(tmp_path, runner):
    from lfgen.cli.app import cli

    out = run_dir(tmp_path, TRAIN, ())
    result = runner.invoke(cli, ["eval", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: run r: not finished") and result.output.count("\n") == 1
    result = runner.invoke(cli, ["eval", str(out), "--max-new-tokens", "0"])
    assert result.exit_code == 1 and "Error: --max-new-tokens: must be at least 1 (got 0)" in result.output


def test_predict_argv():
    assert predict_argv("llamafactory-cli", "outputs/r/eval/lfgen_eval.yaml") == [
        "llamafactory-cli", "train", "outputs/r/eval/lfgen_eval.yaml"]


def test_eval_is_refused_while_lfgen_run_holds_the_experiment(tmp_path, runner, monkeypatch):
    """One lock per experiment: eval and run both write its state, so one waits for the other."""
    from lfgen.cli.app import cli
    from lfgen.runs.lock import Lock
    from lfgen.training.target import resolve

    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["sweep", "target", "--name", "x"]).exit_code == 0
    target = resolve("x")
    with Lock(target.lock_path, "experiment x", holder="lfgen run"):
        result = runner.invoke(cli, ["eval", "x"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: experiment x is already being trained or evaluated by lfgen pid")
    assert "(lfgen run, started" in result.output


def test_an_eval_folder_that_is_a_link_is_never_scored_through_or_removed(tmp_path):
    """Issue 24: RUN/eval as a file or a link was a traceback (shutil.rmtree); a link to another run's scored
    eval/ would also have counted as this run's scores."""
    import os

    from lfgen.training.evaluate import check_eval_dir, is_scored

    other = tmp_path / "other" / "eval"
    other.mkdir(parents=True)
    (other / "lfgen_scores.json").write_text("{}", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    check_eval_dir(run, "r")  # nothing there yet: fine
    os.symlink(other, run / "eval")
    assert not is_scored(run) and is_scored(tmp_path / "other")
    with pytest.raises(InputError, match=r"run r: .*eval is a symbolic link, not lfgen eval's folder"):
        check_eval_dir(run, "r")
    (run / "eval").unlink()
    (run / "eval").write_text("notes\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"eval is a file, not lfgen eval's folder.*move it aside"):
        check_eval_dir(run, "r")


@pytest.mark.parametrize("options, message", [
    (EvalOptions(temperature=float("nan")), "--temperature: must be a finite number"),
    (EvalOptions(temperature=float("inf")), "--temperature: must be a finite number"),
    (EvalOptions(max_new_tokens=10**20), "--max-new-tokens: must be at most 131,072"),
])
def test_generation_options_that_would_never_end_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        options.check()
    EvalOptions(max_new_tokens=131_072, temperature=2.0).check()
