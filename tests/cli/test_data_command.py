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


def test_data_reads_pairwise_kto_and_text_rows_and_checks_the_stage(runner, cli, tmp_path):
    from lfgen.tiny import make_dataset, make_kto_dataset, make_pairwise_dataset, make_text_dataset

    root = tmp_path / "data"
    for make in (make_dataset, make_pairwise_dataset, make_kto_dataset, make_text_dataset):
        make(root)
    args = ["data", "tiny_dpo", "tiny_kto", "tiny_text", "--dataset-dir", str(root), "--json"]
    data = json.loads(runner.invoke(cli, args).stdout)
    kinds = {d["name"]: (d["kind"], d["problem_count"], d["rows"]) for d in data["datasets"]}
    assert kinds == {"tiny_dpo": ("pairwise", 0, 40), "tiny_kto": ("feedback", 0, 40), "tiny_text": ("text", 0, 200)}
    fits = runner.invoke(cli, ["data", "tiny_dpo", "--dataset-dir", str(root), "--stage", "dpo"])
    assert fits.exit_code == 0 and "alpaca, pairwise" in fits.stdout
    wrong = runner.invoke(cli, ["data", "tiny_alpaca", "--dataset-dir", str(root), "--stage", "dpo"])
    assert wrong.exit_code == 1
    assert "problem: tiny_alpaca: dataset: 'tiny_alpaca' holds SFT rows" in wrong.stdout
    assert "stage dpo trains on pairwise rows" in wrong.stdout


def test_data_names_the_row_a_pairwise_or_kto_file_gets_wrong(runner, cli, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "dataset_info.json").write_text(json.dumps({
        "pairs": {"file_name": "pairs.json", "ranking": True, "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "kto": {"file_name": "kto.json", "columns": {"prompt": "q", "response": "a", "kto_tag": "ok"}}}))
    (root / "pairs.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "hello"},
         "rejected": {"from": "gpt", "value": "go"}},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
         "chosen": {"from": "gpt", "value": "y"}, "rejected": "not a message"}]))
    (root / "kto.json").write_text(json.dumps([{"q": "a", "a": "b", "ok": True}, {"q": "a", "a": "b", "ok": "yes"}]))
    result = runner.invoke(cli, ["data", "pairs", "kto", "--dataset-dir", str(root)])
    assert result.exit_code == 1
    assert "pairs.json row 2: 2 messages; a pairwise prompt ends with the user's turn" in result.stdout
    assert "pairs.json row 2: no rejected answer in column 'rejected'" in result.stdout
    assert "kto.json row 2: kto_tag column 'ok' is 'yes', not true or false" in result.stdout
def test_preset_reads_the_same_malformed_files_without_a_traceback(runner, cli, tmp_path, monkeypatch):
    """Issue 24: nested brackets, a 300 KB CSV field, a list in columns, a tags list (and more) crashed preset,
    and a FIFO hung it; they go through lfgen data's reader: an entry of the wrong shape is an error, a file
    whose rows can't be read a warning (the size, or the lengths, unknown), as before for files of an unknown kind."""
    from tests.helpers import bad_data_folder

    monkeypatch.chdir(tmp_path)
    bad_data_folder(tmp_path)
    (tmp_path / "data" / "big.csv").write_text("instruction,output\nq," + "x" * 300_000 + "\n", encoding="utf-8")
    info = json.loads((tmp_path / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    info["big"] = {"file_name": "big.csv"}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    shapes = {"columns_str", "columns_list", "columns_int", "tags_list", "tags_nested", "formatting_int",
              "long_name"}  # a file_name no file system holds, like one that does not exist
    for name in info:
        result = runner.invoke(cli, ["preset", "a800", "--dataset", name, "--dataset-dir", "data"])
        assert result.exception is None or isinstance(result.exception, SystemExit), (name, result.exception)
        assert "Traceback" not in result.output, name
        if name in shapes:
            assert result.exit_code == 1 and f"dataset '{name}'" in result.stderr, (name, result.output)
        elif name in ("ok", "big"):  # a 300 KB field is a row LlamaFactory reads
            assert result.exit_code == 0 and "N = 1 samples" in result.stderr, (name, result.output)
        else:
            assert result.exit_code == 0, (name, result.output)
            said = (f"{name}: its rows can't be counted", "holds no rows", "too long",
                    "the data's lengths are unknown")  # JSON lines are counted, then read for R-DATA-CUTOFF
            assert any(words in result.stderr for words in said), (name, result.stderr)
