"""Bad input that used to give a wrong result instead of an error (issue 14): newline injection through
every door, a NaN run picked as best, a corrupt log line hiding a whole tree, a sampling loop that never
ends, an alias bomb. The clean-error side of each is in tests/cli/test_bad_input.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from tests.results.lf_files import Curves, decay, write_run

INJECTED = "trust_remote_code: true #"


def _keys(path: Path) -> dict:
    """The file as LlamaFactory reads it, and as plain PyYAML reads it: both must agree."""
    from lfgen.yamlio import loads

    text = path.read_text(encoding="utf-8")
    assert loads(text) == yaml.safe_load(text)
    return loads(text)


def _assert_clean(path: Path) -> dict:
    data = _keys(path)
    assert "trust_remote_code" not in data, path.read_text(encoding="utf-8")
    for line in path.read_text(encoding="utf-8").splitlines():  # the header stays comments, one line each
        assert not line.startswith("trust_remote_code"), line
    return data


@pytest.mark.parametrize("args", [
    ["--set", f"run_name=x\n{INJECTED}"],
    ["--output-dir", f"o\n{INJECTED}"],
    ["--model", f"./m\n{INJECTED}"],
    ["--dataset", f"d\n{INJECTED}"],
    ["--template", f"qwen\n{INJECTED}"],
    ["--set", f"seed=1\n{INJECTED}"],
], ids=["set-run-name", "output-dir", "model", "dataset", "template", "set-seed"])
def test_a_newline_in_a_preset_value_never_writes_a_key(runner, cli, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["preset", "a800", *args, "-o", "out.yaml"])
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        data = _assert_clean(tmp_path / "out.yaml")
        assert any("\n" in str(value) for value in data.values())  # the value kept, as one quoted scalar
    else:
        assert result.exit_code == 1 and result.output.count("Error:") == 1, result.output
        assert not (tmp_path / "out.yaml").exists()


def test_a_hash_in_a_value_is_kept(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["preset", "a800", "--set", "run_name=exp #3", "-o", "out.yaml"])
    assert result.exit_code == 0, result.output
    assert _keys(tmp_path / "out.yaml")["run_name"] == "exp #3"


@pytest.mark.parametrize("args", [
    ["grid", f"run_name=a\n{INJECTED},b"],
    ["rank", "16", "32", "--outputs-dir", f"o\n{INJECTED}"],
    ["rank", "16", "32", "--set", f"run_name=x\n{INJECTED}"],
    ["grid", f"lora_target=q_proj\n{INJECTED},v_proj"],
], ids=["grid-value", "outputs-dir", "set", "grid-target"])
def test_a_newline_in_a_sweep_value_never_writes_a_key(runner, cli, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["sweep", *args, "--name", "inj"])
    assert "Traceback" not in result.output
    written = sorted((tmp_path / "experiments").rglob("*.yaml")) if (tmp_path / "experiments").exists() else []
    if result.exit_code == 0:
        assert len(written) >= 2
        for path in written:
            _assert_clean(path)
    else:
        assert result.exit_code == 1 and result.output.count("Error:") == 1, result.output
        assert not written


def test_sweep_from_never_picks_a_nan_run(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, loss in (("nan", 0.5), ("good", 1.5), ("worse", 2.0)):
        run = write_run(tmp_path / "outputs" / name, Curves(loss=decay(10), eval={10: loss}))
        if name == "nan":
            results = json.loads((run / "all_results.json").read_text(encoding="utf-8"))
            results["eval_loss"] = math.nan
            (run / "all_results.json").write_text(json.dumps(results), encoding="utf-8")
    result = runner.invoke(cli, ["sweep", "alpha", "--from", "outputs", "--name", "next"])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load((tmp_path / "experiments" / "next" / "experiment.yaml").read_text(encoding="utf-8"))
    assert manifest["base_from"]["run"] == "good", manifest["base_from"]


def test_best_ignores_non_finite_values():
    from lfgen.runs.ranking import best

    items = [("nan", math.nan), ("inf", -math.inf), ("text", "0.1"), ("ok", 1.0), ("none", None)]
    assert best(items, lambda item: item[1], "eval_loss")[0] == "ok"
    assert best(items[:3], lambda item: item[1], "eval_loss") is None


@pytest.mark.parametrize("bad", ["abc", [1], {"a": 1}, None, True, 2.5])
def test_one_bad_current_steps_line_does_not_hide_the_tree(runner, cli, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "outputs" / "good", Curves(loss=decay(10), eval={10: 1.0}))
    broken = write_run(tmp_path / "outputs" / "broken", Curves(loss=decay(10), eval={5: 1.4, 10: 1.2}))
    log = broken / "trainer_log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[3])
    record["current_steps"] = bad
    lines[3] = json.dumps(record)
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = runner.invoke(cli, ["compare", "outputs", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"good", "broken"}
    assert rows["broken"]["best_eval_loss"] == pytest.approx(1.2)
    assert rows["broken"]["final_train_loss"] is not None
    report = runner.invoke(cli, ["report", "outputs", "-o", "r.html"])
    assert report.exit_code == 0, report.output
    assert "broken" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_random_over_a_one_point_space_ends_at_once(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("lora_rank: {choices: [16]}\n", encoding="utf-8")
    for count, says in (("100000000", "more than"), ("2", "1 distinct point")):
        started = time.monotonic()
        result = runner.invoke(cli, ["sweep", "random", count, "--space", "space.yaml"])
        assert time.monotonic() - started < 10
        assert result.exit_code == 1 and says in result.output, result.output
    assert not (tmp_path / "experiments").exists()


def test_a_duplicate_grid_key_is_refused_not_dropped(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["sweep", "grid", "lora_rank=16", "lora_rank=32"])
    assert result.exit_code == 1 and "lora_rank" in result.output, result.output
    assert not (tmp_path / "experiments").exists()


def test_yaml_aliases_are_bounded_and_still_work():
    from lfgen.yamlio import MAX_NODES, loads

    assert loads("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    started = time.monotonic()
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_NODES:,}"):
        loads(bomb)
    assert time.monotonic() - started < 5
    with pytest.raises(yaml.YAMLError, match="refers to itself"):
        loads("a: &x [1, *x]\n")
    big = "values: [" + ", ".join(str(i) for i in range(MAX_NODES // 2)) + "]\n"
    assert len(loads(big)["values"]) == MAX_NODES // 2  # a long flat list is not an alias bomb


def test_a_fifo_is_refused_without_waiting(tmp_path):
    import os

    from lfgen.errors import InputError
    from lfgen.yamlio import read_text

    os.mkfifo(tmp_path / "f.yaml")
    with pytest.raises(InputError, match="not a regular file"):
        read_text(tmp_path / "f.yaml")


def test_a_failed_write_leaves_no_folder_behind(tmp_path):
    from lfgen.errors import InputError
    from lfgen.yamlio import write_new

    with pytest.raises(InputError, match="too long"):
        write_new(tmp_path / "a" / "b" / ("x" * 300) / "c.yaml", "k: v\n")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="is a file, not a folder"):
        write_new(tmp_path / "afile" / "c.yaml", "k: v\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
