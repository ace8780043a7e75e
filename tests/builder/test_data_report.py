"""lfgen data on files the tests write: rows, format problems, duplicates, leakage, token lengths, truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen.builder.data_lengths import APPROXIMATION, Lengths, approximate, cutoff_for, percentile
from lfgen.builder.data_report import report
from lfgen.errors import InputError


def register(root: Path, entries: dict[str, dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return root


def write_json(path: Path, rows: list) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from lfgen.tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny") / "model")


def test_approximation_is_stated_and_counts_cjk_denser():
    assert approximate("abcd" * 10) == 10
    assert approximate("你好世界啊") == 4  # 5 / 1.5 rounded up
    assert "characters / 4" in APPROXIMATION and "1.5" in APPROXIMATION


def test_percentiles_are_nearest_rank():
    ordered = list(range(1, 101))
    assert [percentile(ordered, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    lengths = Lengths.of([5, 1, 3], "x")
    assert (lengths.p50, lengths.max, lengths.count, lengths.mean) == (3, 5, 3, 3.0)


def test_cutoff_rounds_p99_up_to_64_and_is_capped_by_context():
    lengths = Lengths.of(list(range(1, 1001)), "x")  # p99 = 990
    assert cutoff_for(lengths, None)[0] == 1024
    value, how = cutoff_for(lengths, 512)
    assert value == 512 and "capped by the model's context 512" in how


def test_alpaca_rows_duplicates_and_approximate_lengths(tmp_path):
    root = register(tmp_path, {"sft": {"file_name": "sft.json"}})
    rows = [{"instruction": "a" * 40, "input": "", "output": "b" * 399} for _ in range(3)]  # 40+1+399 chars
    rows += [{"instruction": f"q{i}", "input": "", "output": "x" * 7} for i in range(7)]
    write_json(root / "sft.json", rows)
    result = report(["sft"], root, cutoff_len=100)
    (d,) = result.datasets
    assert (d.rows, d.duplicates, d.problem_count) == (10, 2, 0)
    assert d.lengths.max == 110 and d.truncated == 3  # ceil(440 / 4)
    assert result.method.startswith(APPROXIMATION) and "content tokens only" in result.method and result.ok
    assert result.suggested_cutoff == 128


def test_token_lengths_with_the_models_own_tokenizer(tmp_path, tiny_model):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    root = register(tmp_path, {"sft": {"file_name": "sft.jsonl"}})
    rows = [{"instruction": "what is the color of the " + "red " * i, "input": "", "output": "blue"}
            for i in range(0, 60, 3)]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # LlamaFactory's `empty` template adds nothing: the prompt and the answer, each tokenized on its own
    own = [len(tok.encode(r["instruction"], add_special_tokens=False).ids) +
           len(tok.encode(r["output"], add_special_tokens=False).ids) for r in rows]
    cutoff = sorted(own)[len(own) // 2]
    result = report(["sft"], root, model=str(tiny_model), cutoff_len=cutoff, template="empty")
    (d,) = result.datasets
    assert d.lengths.max == max(own) and d.truncated == sum(n > cutoff for n in own) > 0
    assert "tokenizer" in result.method and "approximated" not in result.method and "empty template" in result.method


def test_lengths_count_the_template_lfgen_writes_for_the_model(tmp_path, tiny_model):
    """Issue 21: `lfgen data --cutoff-len 64` said "truncates 0" while qwen's default system prompt alone is 65
    tokens."""
    root = register(tmp_path, {"sft": {"file_name": "sft.json"}})
    write_json(root / "sft.json", [{"instruction": f"what is {i} + 1?", "input": "", "output": f"{i + 1}"}
                                   for i in range(30)])
    with_qwen = report(["sft"], root, model=str(tiny_model), cutoff_len=64, template="qwen")
    assert with_qwen.truncated == 30 and with_qwen.suggested_cutoff == 128
    assert "qwen template" in with_qwen.method and "system prompt included" in with_qwen.method


def test_sharegpt_roles_and_empty_turns_are_problems(tmp_path):
    root = register(tmp_path, {"chat": {"file_name": "chat.jsonl", "formatting": "sharegpt"}})
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    wrong_role = {"conversations": [{"from": "user", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    empty = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "  "}]}
    missing = {"messages": []}
    lines = [good, wrong_role, empty, missing]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    result = report(["chat"], root)
    problems = result.datasets[0].problems
    assert not result.ok and result.datasets[0].problem_count == 3
    assert any("row 2: message 0 has role 'user', expected human or observation" in p for p in problems)
    assert any("row 3: message 1 (gpt) is empty" in p for p in problems)
    assert any("row 4: no messages in column 'conversations'" in p for p in problems)


def test_alpaca_columns_from_the_registration_and_missing_ones(tmp_path):
    root = register(tmp_path, {"qa": {"file_name": "qa.csv", "columns": {"prompt": "question", "response": "answer"}}})
    (root / "qa.csv").write_text("question,answer\nwhat?,this\n,empty prompt\nno answer,\n", encoding="utf-8")
    result = report(["qa"], root)
    problems = result.datasets[0].problems
    assert result.datasets[0].rows == 3
    assert any("row 2: empty prompt" in p for p in problems) and any("row 3: empty answer" in p for p in problems)
    register(tmp_path, {"qa": {"file_name": "qa.csv"}})  # the default columns: instruction / output
    assert "no prompt column 'instruction' and no response column 'output'" in report(["qa"], root).datasets[0].problems[0]


def test_parquet_and_eval_overlap(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = register(tmp_path, {"train": {"file_name": "train.parquet"}, "dev": {"file_name": "dev.json"}})
    train = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(train), root / "train.parquet")
    dev = [train[0], {**train[1], "output": "other"}, {"instruction": "new", "input": "", "output": "n"}]
    write_json(root / "dev.json", dev)
    result = report(["train"], root, eval_names=["dev"])
    assert result.datasets[0].rows == 10 and result.datasets[1].eval
    assert result.datasets[1].overlap == {"same_sample": 1, "same_prompt": 2}
    assert result.lengths.count == 10  # the eval set is not part of the training distribution


def test_bad_names_and_files_are_one_error_naming_the_fix(tmp_path):
    root = register(tmp_path, {"sft": {"file_name": "gone.json"}, "hub": {"hf_hub_url": "org/data"}})
    with pytest.raises(InputError, match=r"'sfx' is not registered.*did you mean: sft\?"):
        report(["sfx"], root)
    with pytest.raises(InputError, match="gone.json.*does not exist; fix file_name"):
        report(["sft"], root)
    with pytest.raises(InputError, match="on a hub"):
        report(["hub"], root)
    register(tmp_path, {"bad": {"file_name": "bad.json"}})
    (root / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON \(Expecting property name.*fix the file"):
        report(["bad"], root)
