"""lfgen data on the command line: the table, --json, exit 1 on format problems, one Error line for a bad name."""

from __future__ import annotations

import json

from tests.conftest import make_dataset_dir


def test_data_json_and_table(runner, cli, tmp_path):
    root = make_dataset_dir(tmp_path / "data", rows=200)
    result = runner.invoke(cli, ["data", "my_sft", "--dataset-dir", str(root), "--cutoff-len", "5", "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (d,) = data["datasets"]
    assert (d["rows"], d["duplicates"], d["problem_count"]) == (200, 0, 0)
    # "what is {i} + 1?\n{i + 1}": 16-20 characters -> 4-5 approximate tokens; 5 truncates none, 4 some
    assert d["lengths"]["max"] == 5 and d["truncated"] == 0 and data["train"]["suggested_cutoff_len"] == 64
    table = runner.invoke(cli, ["data", "my_sft", "--dataset-dir", str(root), "--cutoff-len", "4"]).stdout
    assert "my_sft" in table and "approximated: characters / 4" in table
    assert "R-DATA-CUTOFF would write cutoff_len 64" in table and "cutoff_len 4 truncates" in table and "truncates 0 of" not in table


def test_data_format_problems_exit_1_and_a_bad_name_is_one_error(runner, cli, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "bad.json").write_text(json.dumps([{"instruction": "q", "output": ""}]), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps({"bad": {"file_name": "bad.json"}}), encoding="utf-8")
    result = runner.invoke(cli, ["data", "bad", "--dataset-dir", str(root)])
    assert result.exit_code == 1 and "problem: bad: bad.json row 1: empty answer ('output')" in result.stdout
    missing = runner.invoke(cli, ["data", "bda", "--dataset-dir", str(root)])
    assert missing.exit_code == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: dataset: 'bda' is not registered in {root / 'dataset_info.json'} (did you mean: bad?); registered: bad"]
