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


# --- issue 24 ---------------------------------------------------------------------------------------------------


def test_report_onto_a_dangling_link_needs_force_and_then_replaces_the_link_not_its_target(runner, cli, tmp_path,
                                                                                           monkeypatch):
    """Issue 24: `lfgen report -o link.html` replaced a dangling link without --force (write_new: every -o)."""
    import os

    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "outputs" / "r1", Curves(loss=decay(10)))
    os.symlink(tmp_path / "gone" / "r.html", tmp_path / "link.html")
    refused = runner.invoke(cli, ["report", "outputs", "-o", "link.html"])
    assert refused.exit_code == 1 and "link.html is a symbolic link; pass --force" in refused.output
    assert os.path.islink(tmp_path / "link.html")
    forced = runner.invoke(cli, ["report", "outputs", "-o", "link.html", "--force"])
    assert forced.exit_code == 0, forced.output
    assert not os.path.islink(tmp_path / "link.html") and "<html" in (tmp_path / "link.html").read_text()
    assert not (tmp_path / "gone").exists()  # never written through the link


def test_a_json_object_of_strings_is_an_error_not_rows_of_characters(runner, cli, tmp_path):
    """Issue 24: lfgen data read {"instruction": "abc", "output": "def"} as 3 rows of one character, exit 0."""
    (tmp_path / "d.json").write_text(json.dumps({"instruction": "abc", "output": "def"}), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}), encoding="utf-8")
    result = runner.invoke(cli, ["data", "d", "--dataset-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "whose 'instruction' is a string, not a list" in result.stderr


@pytest.mark.parametrize("content", ["[]", ""], ids=["empty-list", "no-lines"])
def test_a_dataset_of_no_rows_is_an_error_not_a_clean_report(runner, cli, tmp_path, content):
    """Issue 24: lfgen data passed an empty dataset with exit 0 (0 samples, cutoff_len 64 suggested)."""
    name = "e.json" if content else "e.jsonl"
    (tmp_path / name).write_text(content, encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"e": {"file_name": name}}), encoding="utf-8")
    result = runner.invoke(cli, ["data", "e", "--dataset-dir", str(tmp_path)])
    assert result.exit_code == 1 and f"{name} holds no rows" in result.stderr and "cutoff_len" not in result.stdout


def test_an_int_range_without_a_whole_number_is_refused_not_rounded(tmp_path):
    """Issue 24: lora_rank {low: 8.2, high: 8.7, type: int} was accepted and every trial got 8."""
    from lfgen.errors import InputError
    from lfgen.tuning.space import load

    path = tmp_path / "s.yaml"
    path.write_text("lora_rank: {low: 8.2, high: 8.7, type: int}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"lora_rank: an int range with no whole number between low 8.2 and high 8.7"):
        load(str(path))
    path.write_text("lora_rank: {low: 7.5, high: 8.5, type: int}\n", encoding="utf-8")
    assert load(str(path))["lora_rank"]["low"] == 7.5  # 8 lies inside: a valid range


def test_a_nan_range_end_is_named_as_nan(tmp_path):
    """Issue 24: a NaN range end was reported as "out of range" (the build's check of the value)."""
    from lfgen.errors import InputError
    from lfgen.tuning.space import load

    path = tmp_path / "s.yaml"
    path.write_text("lora_dropout: {low: 0.0, high: .nan}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"lora_dropout: a range end is nan \(not a number\)"):
        load(str(path))
