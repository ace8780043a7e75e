"""Finding run directories at any depth."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfgen.errors import InputError
from lfgen.runs.discover import experiment_name, find_runs, natural_key, run_name


def touch(path: Path, text: str = "{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_finds_runs_at_any_depth_and_skips_checkpoints_and_tensorboard(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "trainer_log.jsonl")
    touch(tmp_path / "a" / "checkpoint-500" / "trainer_state.json")  # a checkpoint is not a run
    touch(tmp_path / "a" / "runs" / "Nov23_00-10-49_vm" / "all_results.json")  # TensorBoard folder of run a
    touch(tmp_path / "deep" / "er" / "still" / "r1" / "all_results.json")
    touch(tmp_path / "queued" / "lfgen_run.yaml", "lora_rank: 8\n")
    touch(tmp_path / "not-a-run" / "notes.txt")
    touch(tmp_path / ".hidden" / "trainer_log.jsonl")
    found = [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)]
    assert found == ["a", "deep/er/still/r1", "queued"]


def test_runs_folder_of_a_sweep_is_searched(tmp_path: Path) -> None:
    # experiments/<name>/runs/<run>/ is lfgen's layout: "runs" is skipped only inside a run.
    for rank in (128, 16, 32):
        touch(tmp_path / "experiments" / "rank-sweep" / "runs" / f"r{rank}" / "trainer_log.jsonl")
    found = find_runs(tmp_path)
    assert [p.name for p in found] == ["r16", "r32", "r128"]  # natural order, not r128 first
    assert {experiment_name(p) for p in found} == {"rank-sweep"}
    assert run_name(found[0], tmp_path) == "experiments/rank-sweep/runs/r16"


def test_a_run_dir_itself_and_a_file_in_it(tmp_path: Path) -> None:
    log = touch(tmp_path / "r64" / "trainer_log.jsonl")
    assert find_runs(tmp_path / "r64") == [tmp_path / "r64"]
    assert find_runs(log) == [tmp_path / "r64"]
    assert run_name(tmp_path / "r64", tmp_path / "r64") == "r64"


def test_bad_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        find_runs(tmp_path / "missing")
    other = touch(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="is a file"):
        find_runs(other)
    assert find_runs(tmp_path) == []


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["r128", "r16", "r32", "r8", "a", "r16b"]
    assert sorted(names, key=natural_key) == ["a", "r8", "r16", "r16b", "r32", "r128"]


def test_experiment_is_the_folder_holding_the_runs(tmp_path: Path) -> None:
    assert experiment_name(tmp_path / "outputs" / "rank-sweep" / "rank-16") == "rank-sweep"
    assert experiment_name(tmp_path / "experiments" / "lr-scan" / "runs" / "lr-1e-4") == "lr-scan"
    assert experiment_name(tmp_path / "outputs" / "qwen2-7b-a800-r64") == "outputs"
