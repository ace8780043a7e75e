"""Data problems carry over (issue 21 item 7): `lfgen data --drop-empty --dedupe -o FILE` writes a cleaned, registered
copy, and preset, sweep and tune size runs by the usable rows, not by every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfgen import BuildOptions, build
from lfgen.builder.data_clean import clean
from lfgen.errors import InputError


def tryout(root: Path, fmt: str = "json") -> Path:
    """The tryout's data, scaled down: 280 real rows, 10 exact repeats, 10 empty answers (alpaca, with a system
    column so the registration's columns must carry over)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"q": f"what is the capital of country {i}?", "a": f"city {i}", "s": "be brief"} for i in range(280)]
    rows += rows[:10] + [{"q": f"convert {i} km to m", "a": "  ", "s": "be brief"} for i in range(10)]
    if fmt == "jsonl":
        (root / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (root / "mine.json").write_text(json.dumps(rows))
    entry = {"file_name": f"mine.{fmt}", "columns": {"prompt": "q", "response": "a", "system": "s"}}
    (root / "dataset_info.json").write_text(json.dumps({"mine": entry}))
    return root


def test_preset_sizes_runs_by_the_usable_rows(tmp_path):
    root = tryout(tmp_path / "data")
    result = build("lightweight", BuildOptions.parse(dataset=["mine"], dataset_dir=str(root)))
    assert result.samples == 280  # was 300: empty answers and repeats counted as good samples
    assert "280 usable (10 with an empty prompt or answer and 10 repeating an earlier row not counted" in \
        result.samples_note
    (warning,) = [w for w in result.warnings if w.startswith("R-DATA-USABLE")]
    assert f"lfgen data mine --dataset-dir {root} --drop-empty --dedupe -o FILE" in warning


def test_a_cleaned_copy_keeps_every_other_row_and_its_registration(tmp_path):
    root = tryout(tmp_path / "data")
    done = clean("mine", root, root / "mine_clean.jsonl", drop_empty=True, dedupe=True)
    assert (done.name, done.rows, done.kept, done.empty, done.duplicates) == ("mine_clean", 300, 280, 10, 10)
    rows = [json.loads(line) for line in (root / "mine_clean.jsonl").read_text().splitlines()]
    assert rows == json.loads((root / "mine.json").read_text())[:280]  # the original rows, columns and order kept
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["mine_clean"] == {"file_name": "mine_clean.jsonl", "columns": info["mine"]["columns"]}
    again = build("lightweight", BuildOptions.parse(dataset=["mine_clean"], dataset_dir=str(root)))
    assert again.samples == 280 and not any(w.startswith("R-DATA-USABLE") for w in again.warnings)


def test_only_what_was_asked_is_dropped(tmp_path):
    root = tryout(tmp_path / "data", fmt="jsonl")
    done = clean("mine", root, root / "deduped.json", dedupe=True, drop_empty=False, register="deduped")
    assert (done.kept, done.empty, done.duplicates) == (290, 0, 10)
    assert len(json.loads((root / "deduped.json").read_text())) == 290


@pytest.mark.parametrize("args,fragment", [
    ({"out": "c.csv"}, "must end in .json or .jsonl"),
    ({"out": "mine.json"}, "is the dataset's own file"),
    ({"out": "c.json", "drop_empty": False}, "say what to drop"),
    ({"out": "c.json", "register": "mine"}, "'mine' is already in"),
])
def test_bad_requests_write_nothing(tmp_path, args, fragment):
    root = tryout(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    options = {"drop_empty": True, "dedupe": False, "register": None, **args}
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        clean("mine", root, root / options.pop("out"), **options)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_the_command_cleans_registers_and_checks_the_copy(tmp_path, runner, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tryout(tmp_path / "data")
    first = runner.invoke(cli, ["data", "mine"])
    assert first.exit_code == 1 and "empty answer" in first.stdout  # the problems, as before
    cleaned = runner.invoke(cli, ["data", "mine", "--drop-empty", "--dedupe", "-o", "data/mine_clean.jsonl"])
    assert cleaned.exit_code == 0, cleaned.output
    assert "wrote data/mine_clean.jsonl: 280 of 300 rows (dropped: 10 empty, 10 duplicate); registered as mine_clean" \
        in cleaned.stderr
    assert "mine_clean" in cleaned.stdout and "problem:" not in cleaned.stdout
    refused = runner.invoke(cli, ["data", "mine", "--dedupe", "-o", "data/mine_clean.jsonl"])
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: --register: 'mine_clean' is already in")
    for args, fragment in ((["--dedupe"], "give it a file with -o FILE"),
                           (["other", "-o", "x.json", "--dedupe"], "cleans one dataset at a time")):
        result = runner.invoke(cli, ["data", "mine", *args])
        assert result.exit_code == 1 and fragment in result.stderr and "Traceback" not in result.output


def _one_question_of_every_picture(project: Path) -> Path:
    """The caption set's 12 pictures, each asked the same question with the same answer, and one row repeated whole
    (the same picture too): a VQA set's shape, where the text alone repeats on every row."""
    from lfgen.tiny_vlm import CAPTIONS

    data = project / "data"
    pictures = [row["images"] for row in json.loads((data / f"{CAPTIONS}.json").read_text())]
    rows = [{"messages": [{"role": "user", "content": "<image>Is there a shape?"},
                          {"role": "assistant", "content": "yes"}], "images": images} for images in pictures]
    (data / "asked.json").write_text(json.dumps([*rows, rows[3]]))
    info = json.loads((data / "dataset_info.json").read_text())
    info["asked"] = {**info[CAPTIONS], "file_name": "asked.json"}
    (data / "dataset_info.json").write_text(json.dumps(info))
    return data


def test_one_question_of_many_pictures_is_not_a_repeat(vlm_project, monkeypatch):
    from lfgen.builder.data_report import report

    data = _one_question_of_every_picture(vlm_project)
    (found,) = report(["asked"], data).datasets
    assert found.duplicates == 1  # the text repeats on all 13 rows; only the row with the same picture repeats
    done = clean("asked", data, data / "asked_clean.json", drop_empty=False, dedupe=True)
    assert (done.rows, done.kept, done.duplicates) == (13, 12, 1)
    monkeypatch.chdir(vlm_project)  # a vision-language run is sized by its usable rows too (R-DATA-USABLE)
    result = build("caption", BuildOptions.parse(model="./tiny-qwen2-vl", dataset=["asked"], dataset_dir="data"))
    assert result.samples == 12 and "12 usable (1 repeating an earlier row not counted" in result.samples_note
    assert any(w.startswith("R-DATA-USABLE") for w in result.warnings)


def test_rows_with_embedded_media_are_never_counted_as_repeats():
    from lfgen.builder.data_rows import Sample

    # embedded bytes are read as b"" (no path to compare): two such rows with the same text may differ in their media
    for media in ({"images": (b"",)}, {"videos": (b"",)}):
        first, second = (Sample("<image>what is it?", "a cat", where=f"file row {i}", **media) for i in (1, 2))
        assert first.identity != second.identity and first.asks != second.asks
    same = [Sample("<image>what is it?", "a cat", images=("a.png",), where=f"file row {i}") for i in (1, 2)]
    assert same[0].identity == same[1].identity  # the same picture: a repeat
