"""Broken state files: a hand-edited experiment.yaml, a damaged state.sqlite, a corrupt calibration file.

Each is one ``Error:`` line naming the file and what to do, exit 1, no traceback, and the file is left
exactly as it was.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from lfgen.errors import StateError, describe_validation, validation_problems
from lfgen.experiments.make import make_sweep
from lfgen.runs.manifest import load
from lfgen.runs.states import RunState
from lfgen.runs.store import Store

MANIFEST = "experiments/rank-sweep/experiment.yaml"
STATE = "experiments/rank-sweep/state.sqlite"


@pytest.fixture(autouse=True)
def _project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LFGEN_CALIBRATION", str(tmp_path / "calibration.json"))


def one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --- the one ValidationError renderer -----------------------------------------------------------------


class _Run(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    steps: int


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    runs: list[_Run]


def test_validation_errors_are_one_line_per_field_path():
    with pytest.raises(ValidationError) as caught:
        _Doc.model_validate({"runs": [{"name": "a", "steps": "many"}, {"name": "b", "steps": 1, "x": 1}]})
    assert validation_problems(caught.value) == [
        "name: required",
        "runs.0.steps: must be an integer, unable to parse string as an integer (got 'many')",
        "runs.1.x: Extra inputs are not permitted (got 1)",
    ]
    assert describe_validation(caught.value, "f.yaml").startswith("f.yaml: name: required; runs.0.steps: ")


def test_long_values_are_cut_short():
    with pytest.raises(ValidationError) as caught:
        _Doc.model_validate({"name": "n", "runs": "x" * 500})
    line = validation_problems(caught.value)[0]
    assert line.startswith("runs: must be a list (got 'xxx") and line.endswith("...)") and len(line) < 100


# --- experiment.yaml ----------------------------------------------------------------------------------


def _sweep(tmp_path):
    make_sweep("rank", ["8", "16"])
    return tmp_path / MANIFEST


BROKEN_MANIFESTS = [
    ("name: [rank-sweep\n", "not valid YAML at line"),
    ("- just\n- a list\n", "holds a list, not a mapping"),
    ("", "is empty"),
    (None, "runs: required"),  # a field removed
    ("extra", "surprise: Extra inputs are not permitted"),
    ("badrun", "runs.0.config: must be a string"),
]


def _break(path, how):
    text = path.read_text()
    if how is None:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("runs:")
                         and not line.startswith(("- name:", "  ")))
    elif how == "extra":
        text += "surprise: 1\n"
    elif how == "badrun":
        text = text.replace("  config: runs/rank-8.yaml", "  config: [1, 2]")
    else:
        text = how
    path.write_text(text)
    return text


@pytest.mark.parametrize("how, fragment", BROKEN_MANIFESTS)
def test_a_broken_manifest_is_one_state_error(tmp_path, how, fragment):
    path = _sweep(tmp_path)
    _break(path, how)
    with pytest.raises(StateError, match="lfgen sweep wrote it") as caught:
        load("experiments/rank-sweep")
    assert str(caught.value).startswith(f"{MANIFEST}: ") and fragment in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("args", [["run", "rank-sweep"], ["status", "rank-sweep"],
                                  ["sweep", "alpha", "--from", "experiments/rank-sweep"],
                                  ["compare", "experiments/rank-sweep"]])
@pytest.mark.parametrize("how, fragment", [BROKEN_MANIFESTS[0], BROKEN_MANIFESTS[4]])
def test_every_command_reading_a_broken_manifest_says_so_in_one_line(tmp_path, runner, cli, args, how, fragment):
    path = _sweep(tmp_path)
    text = _break(path, how)
    one_error_line(runner.invoke(cli, args), MANIFEST, fragment, "--force replaces the folder")
    assert path.read_text() == text


def test_compare_follows_the_manifest_to_the_output_dirs(tmp_path, runner, cli):
    from .results.lf_files import Curves, write_run

    _sweep(tmp_path)
    write_run(tmp_path / "outputs/rank-sweep/rank-8", Curves(loss=[2.0, 1.5, 1.2]), total_steps=3)
    result = runner.invoke(cli, ["compare", "experiments/rank-sweep", "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = {line.split(",")[0]: line for line in result.stdout.splitlines()[1:]}
    assert "rank-8" in rows and ",pending," in rows["rank-16"]  # planned, not started: a pending row


# --- state.sqlite -------------------------------------------------------------------------------------


def _real_state(path):
    store = Store(path)
    store.sync_runs([(f"rank-{r}", f"runs/rank-{r}.yaml", f"outputs/x/rank-{r}") for r in range(40)])
    for r in range(40):
        store.transition(f"rank-{r}", RunState.DONE, detail="x" * 300)
        store.event(f"rank-{r}", "started", {"gpus": [0], "command": "y" * 300})
    store.close()
    return path.read_bytes()


def _garbage(data):
    return b"this is not an SQLite file\n" * 200


def _truncated(data):
    return data[:len(data) // 2]


def _header_only(data):
    return data[:200]


@pytest.mark.parametrize("damage", [_garbage, _truncated, _header_only])
def test_a_damaged_state_file_is_one_state_error_and_is_left_alone(tmp_path, damage):
    state = tmp_path / "s.sqlite"
    broken = damage(_real_state(state))
    state.write_bytes(broken)
    with pytest.raises(StateError) as caught:
        Store(state).runs()
    message = str(caught.value)
    assert message.startswith(f"{state}: not a usable lfgen run state (")
    assert f"mv {state} {state}.broken" in message and "lfgen run starts a new state" in message
    assert state.read_bytes() == broken
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]


@pytest.mark.parametrize("sql, why", [("DROP TABLE events", "has no events table"),
                                       ("DROP TABLE runs", "has no runs table"),
                                       ("ALTER TABLE runs DROP COLUMN pgid", "its runs table lacks pgid")])
def test_a_state_file_missing_lfgen_tables_is_one_state_error(tmp_path, sql, why):
    state = tmp_path / "s.sqlite"
    _real_state(state)
    db = sqlite3.connect(state)
    db.execute(sql)
    db.commit()
    db.close()
    with pytest.raises(StateError, match=why):
        Store(state)


def test_a_new_or_empty_state_file_is_created(tmp_path):
    state = tmp_path / "s.sqlite"
    state.touch()
    store = Store(state)
    store.sync_runs([("a", "a.yaml", "out/a")])
    assert [row.name for row in store.runs()] == ["a"]
    store.close()
    assert [row.state for row in Store(state).runs()] == ["pending"]


@pytest.mark.parametrize("args", [["run", "rank-sweep"], ["status", "rank-sweep"]])
@pytest.mark.parametrize("damage", [_garbage, _truncated])
def test_run_and_status_on_a_damaged_state(tmp_path, runner, cli, args, damage):
    _sweep(tmp_path)
    state = tmp_path / STATE
    state.write_bytes(damage(_real_state(tmp_path / "real.sqlite")))
    before = state.read_bytes()
    one_error_line(runner.invoke(cli, args), STATE, "move it away", "lfgen run starts a new state")
    assert state.read_bytes() == before


# --- calibration.json ---------------------------------------------------------------------------------


BROKEN_CALIBRATIONS = [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a list, not an object"),
    ('{"RTX 4090|qwen2": {"factor": "big"}}', "RTX 4090|qwen2: the factor must be a number above 0"),
    ('{"RTX 4090|qwen2": 1.2}', "the factor must be a number above 0"),
    ('{"RTX 4090|qwen2": {"factor": 0}}', "the factor must be a number above 0"),
    ('{"RTX 4090|qwen2": {"factor": true}}', "the factor must be a number above 0"),
]


@pytest.mark.parametrize("text, fragment", BROKEN_CALIBRATIONS)
def test_preset_with_a_broken_calibration_file(tmp_path, runner, cli, text, fragment):
    path = tmp_path / "calibration.json"
    path.write_text(text)
    result = runner.invoke(cli, ["preset", "auto", "--gpu", "4090", "--model", "Qwen/Qwen2.5-7B-Instruct"])
    one_error_line(result, str(path), fragment, "lfgen leaves it as it is", f"mv {path} {path}.broken")
    assert result.stdout == "" and path.read_text() == text


@pytest.mark.parametrize("text, fragment", BROKEN_CALIBRATIONS[:3])
def test_calibrate_never_overwrites_a_broken_calibration_file(tmp_path, runner, cli, text, fragment):
    from tests.helpers import measured_run_dir as run_dir

    out, _ = run_dir(tmp_path, "r", [25.0])
    path = tmp_path / "calibration.json"
    path.write_text(text)
    one_error_line(runner.invoke(cli, ["calibrate", str(out)]), str(path), fragment, "saves nothing into it")
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "outputs"]
    path.unlink()
    assert runner.invoke(cli, ["calibrate", str(out)]).exit_code == 0
    assert json.loads(path.read_text())["A800|qwen2"]["runs"] == 1
