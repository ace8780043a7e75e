"""The default output_dir: a folder per config, so two configs that differ never train into one folder."""

from __future__ import annotations

import re

import yaml

from lfgen.builder.options import BuildOptions
from lfgen.builder.steps import build, config_digest


def output_dir(runner, cli, path, *args):
    result = runner.invoke(cli, ["preset", "a800", "--samples", "5000", *args, "-o", str(path)])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(path.read_text())["output_dir"]


def test_configs_that_differ_get_different_default_output_dirs(runner, cli, tmp_path):
    a = output_dir(runner, cli, tmp_path / "a.yaml", "--lr", "1e-3")
    b = output_dir(runner, cli, tmp_path / "b.yaml", "--lr", "2e-3")
    again = output_dir(runner, cli, tmp_path / "c.yaml", "--lr", "1e-3")
    assert a != b and a == again  # the same config, the same folder: resume still finds it
    assert re.fullmatch(r"outputs/qwen2-7b-instruct-a800-r\d+-[0-9a-f]{6}", a), a
    assert a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]  # only the hash differs


def test_the_hash_covers_the_finished_config_but_not_output_dir():
    result = build("a800", BuildOptions.parse(samples=5000))
    config = result.config
    assert config["output_dir"].endswith("-" + config_digest(config))
    assert config_digest({**config, "output_dir": "elsewhere"}) == config_digest(config)
    assert config_digest({**config, "seed": 43}) != config_digest(config)
    # a --set key no rule touches changes the folder too
    other = build("a800", BuildOptions.parse(samples=5000, set={"save_total_limit": 7})).config
    assert other["output_dir"] != config["output_dir"]
    assert result.decisions["output_dir"].value == config["output_dir"]


def test_an_output_dir_the_user_or_a_file_gives_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = build("a800", BuildOptions.parse(samples=5000, output_dir="outputs/mine")).config
    assert given["output_dir"] == "outputs/mine"
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**given, "output_dir": "outputs/from-file"}))
    assert build(str(base), BuildOptions.parse(samples=5000)).config["output_dir"] == "outputs/from-file"
