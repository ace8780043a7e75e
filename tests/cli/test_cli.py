"""The command line: help with examples, JSON shapes, stdout/stderr, exit codes, and every bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from lfgen.cli import cli as root

COMMANDS = root.list_commands(None)  # the lazy table: root.commands holds only what has loaded
assert len(COMMANDS) >= 18, COMMANDS


def run(runner, cli, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(runner, cli, command):
    result = run(runner, cli, command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and f"lfgen {command}" in result.output


def test_version(runner, cli):
    from lfgen import __version__

    assert run(runner, cli, "--version").output.strip() == f"lfgen, version {__version__}"


def test_presets_json_has_stable_keys(runner, cli):
    data = json.loads(run(runner, cli, "presets", "--json").stdout)
    assert [p["name"] for p in data][:4] == ["lightweight", "balanced", "a800", "large-rank"]
    assert set(data[0]) >= {"name", "summary", "source", "lora", "pinned", "seed_figures", "alpha_ratio"}


def test_presets_table_lists_every_preset(runner, cli):
    out = run(runner, cli, "presets").stdout
    for name in ("lightweight", "balanced", "a800", "large-rank", "conservative", "alpha-4x", "aggressive",
                 "efficiency", "auto"):
        assert name in out


def test_preset_writes_yaml_to_stdout_and_messages_to_stderr(runner, cli):
    result = run(runner, cli, "preset", "a800", "--rank", "64")
    assert result.exit_code == 0
    config = yaml.safe_load(result.stdout)
    assert (config["lora_rank"], config["lora_alpha"], config["lora_target"]) == (64, 128, "all")
    assert "warning:" not in result.stdout


def test_preset_to_file_refuses_to_overwrite_without_force(runner, cli, tmp_path):
    target = tmp_path / "configs" / "qv.yaml"
    assert run(runner, cli, "preset", "lightweight", "-o", str(target)).exit_code == 0
    before = target.read_text()
    result = run(runner, cli, "preset", "a800", "-o", str(target))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: -o: {target} already exists; pass --force to overwrite it"
    assert target.read_text() == before
    assert run(runner, cli, "preset", "a800", "-o", str(target), "--force").exit_code == 0
    assert yaml.safe_load(target.read_text())["lora_rank"] == 64


def test_issue_example_command(runner, cli, dataset_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(runner, cli, "preset", "lightweight", "--gpu", "4090", "--model", "Qwen/Qwen2.5-7B-Instruct",
                 "--dataset", "my_sft", "--dataset-dir", "data", "-o", "configs/qv.yaml")
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load((tmp_path / "configs/qv.yaml").read_text())
    assert config["dataset"] == "my_sft" and config["lora_dropout"] == 0.2  # 2,000 rows counted from data/my_sft.json
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 32
    assert "estimate for Qwen/Qwen2.5-7B-Instruct on RTX 4090" in result.stderr  # printed after writing


def test_set_any_llamafactory_key(runner, cli):
    config = yaml.safe_load(run(runner, cli, "preset", "a800", "--set", "seed=7", "--set", "learning_rate=1e-4").stdout)
    assert config["seed"] == 7 and config["learning_rate"] == 1e-4


def test_set_no_yes_on_off_of_a_string_key_is_the_string(runner, cli):
    """Issue 21: `--set eval_strategy=no` was read as YAML 1.1 false and refused ("must be 'no', 'steps' or 'epoch'
    (got False)"); for a key LlamaFactory types as a string, no/yes/on/off are the words."""
    config = yaml.safe_load(run(runner, cli, "preset", "a800", "--set", "eval_strategy=no", "--set",
                                "save_strategy=no", "--set", "do_eval=no").stdout)
    assert (config["eval_strategy"], config["save_strategy"], config["do_eval"]) == ("no", "no", False)


def test_a_reader_that_stops_reading_ends_the_command_quietly(runner, cli, tmp_path):
    """Issue 21: `lfgen explain FILE | head` exited 1 with no message (rich's broken-pipe exit); a short output that
    fit the pipe exited 0. Now both exit 0, nothing on stderr."""
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(run(runner, cli, "preset", "a800").stdout)
    for args in (["explain", str(config)], ["presets"], ["preset", "a800"]):
        proc = subprocess.Popen([sys.executable, "-m", "lfgen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before the first line is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0 and err == "", (args, err)


BAD_INPUT = [
    (["preset", "a80"], 1, "preset: unknown preset 'a80' (did you mean: a800?); choose one of lightweight"),
    (["preset", "a800", "--rank", "0"], 1, "--rank: must be greater than 0 (got 0)"),
    (["preset", "a800", "--rank", "-8"], 1, "--rank: must be greater than 0 (got -8)"),
    (["preset", "a800", "--rank", "abc"], 2, "'abc' is not a valid integer"),
    (["preset", "a800", "--dropout", "1"], 1, "--dropout: must be less than 1 (got 1.0)"),
    (["preset", "a800", "--dropout", "-0.1"], 1, "--dropout: must be greater than or equal to 0 (got -0.1)"),
    (["preset", "a800", "--alpha", "0"], 1, "--alpha: must be greater than 0 (got 0)"),
    (["preset", "a800", "--gpu", "rtx4900"], 1, "--gpu: unknown GPU 'rtx4900' (did you mean:"),
    (["preset", "a800", "--gpu", "a100"], 1, "--gpu: 'a100' names more than one card; use one of A100-40, A100-80"),
    (["preset", "a800", "--gpu-mem", "0"], 1, "--gpu-mem: must be greater than 0 (got 0.0)"),
    (["preset", "a800", "--num-gpus", "0"], 1, "--num-gpus: must be greater than 0 (got 0)"),
    (["preset", "a800", "--set", "lora_rank"], 1, "--set: 'lora_rank' is not key=value; write it as --set key=value"),
    (["preset", "a800", "--set", "lora_rnk=8"], 1,
     "--set: 'lora_rnk' is not a LlamaFactory 0.9.5 key (did you mean: lora_rank"),
    (["preset", "a800", "--set", "lora_rank=abc"], 1, "lora_rank: must be an integer (got 'abc')"),
    (["preset", "a800", "--target", "q proj"], 1, "--target: 'q proj' is not a module list"),
    (["preset", "a800", "--precision", "fp8"], 2, "'fp8' is not one of 'bf16', 'fp16', 'fp32'"),
]


@pytest.mark.parametrize("args,code,message", BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_clear_error(runner, cli, args, code, message):
    result = runner.invoke(cli, args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    if code == 1:
        assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1


def test_dataset_dir_without_dataset_info(runner, cli, tmp_path):
    result = runner.invoke(cli, ["preset", "a800", "--dataset-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"Error: dataset_dir: {tmp_path} has no dataset_info.json; register your data "
                                     "there (https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md) or "
                                     "pass another --dataset-dir")


def test_dataset_not_registered(runner, cli, dataset_dir):
    result = runner.invoke(cli, ["preset", "a800", "--dataset", "my_sf", "--dataset-dir", str(dataset_dir)])
    assert result.exit_code == 1
    assert "dataset: 'my_sf' is not registered in" in result.stderr and "did you mean: my_sft" in result.stderr


def test_samples_does_not_skip_the_registration_check(runner, cli, dataset_dir):
    result = runner.invoke(cli, ["preset", "a800", "--samples", "500", "--dataset", "nope", "--dataset-dir",
                                 str(dataset_dir)])
    assert result.exit_code == 1 and result.stdout == ""
    assert (f"Error: dataset: 'nope' is not registered in {dataset_dir}/dataset_info.json" in result.stderr)
    result = runner.invoke(cli, ["preset", "a800", "--samples", "500", "--dataset-dir", str(dataset_dir.parent)])
    assert result.exit_code == 1 and "has no dataset_info.json" in result.stderr


def test_samples_with_registered_data_or_no_named_data_builds(runner, cli, dataset_dir, tmp_path, monkeypatch):
    result = runner.invoke(cli, ["preset", "a800", "--samples", "500", "--dataset", "my_sft", "--dataset-dir",
                                 str(dataset_dir)])
    assert result.exit_code == 0 and yaml.safe_load(result.stdout)["dataset"] == "my_sft"
    monkeypatch.chdir(tmp_path)  # no data/ here: the preset's own dataset is not checked when the user named none
    assert runner.invoke(cli, ["preset", "a800", "--samples", "500"]).exit_code == 0


def test_fp16_forced_is_a_warning_not_an_error(runner, cli):
    result = runner.invoke(cli, ["preset", "a800", "--gpu", "A100-80", "--precision", "fp16"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["fp16"] is True
    assert "warning: R-HW-PRECISION: fp16 is on (A100-80 has bf16): seed 001" in result.stderr


def test_nothing_written_on_error(runner, cli, tmp_path):
    target = tmp_path / "out.yaml"
    assert runner.invoke(cli, ["preset", "a800", "--rank", "0", "-o", str(target)]).exit_code == 1
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content,message", [
    ("lora_rank: [1, 2\n", "not valid YAML at line"),
    ("- a\n- b\n", "the file holds a list, not a mapping"),
    ("", "the file is empty"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
])
def test_malformed_files_for_explain(runner, cli, tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = runner.invoke(cli, ["explain", str(path)])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


def test_missing_file_for_explain(runner, cli, tmp_path):
    result = runner.invoke(cli, ["explain", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {tmp_path / 'nope.yaml'}: no such config file; check the path"


def test_usage_error_exits_2(runner, cli):
    assert runner.invoke(cli, ["preset"]).exit_code == 2
    assert runner.invoke(cli, ["validate"]).exit_code == 2


def test_the_lazy_command_table_names_every_command_of_every_family():
    """lfgen/cli/app.py loads a command's module only when it runs; its table must match the modules."""
    import importlib
    import pkgutil

    import lfgen.cli
    from lfgen.cli.app import _COMMANDS

    found = {}
    for info in pkgutil.iter_modules(lfgen.cli.__path__):
        module = importlib.import_module(f"lfgen.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            found[command.name] = (info.name, command.get_short_help_str(1000))
    assert found == _COMMANDS


def test_help_lists_the_commands_as_click_would(runner, cli):
    """--help writes the table's lines without importing the commands: the same text as click's own."""
    import click

    plain = click.Group("lfgen", commands=[cli.get_command(None, name) for name in cli.list_commands(None)])
    ours = run(runner, cli, "--help").output
    theirs = runner.invoke(plain, ["--help"]).output
    assert ours[ours.index("Commands:"):] == theirs[theirs.index("Commands:"):]


def test_a_command_loads_only_its_own_family():
    import subprocess
    import sys

    code = ("import sys; from lfgen.cli import cli\n"
            "try: cli(['presets', '--json'], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('lfgen.cli.')), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "lfgen.cli.config" in out and "lfgen.cli.tuning" not in out and "lfgen.cli.results" not in out
