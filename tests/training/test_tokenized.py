"""The runner's decision on runs that share a tokenized_path (lfgen/training/tokenized.py): one writes it at a time,
the others wait until the folder is whole or the writer has ended. The folders are real datasets saves (what
LlamaFactory's save_to_disk writes); the real runs are tests/training/test_tokenized_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfgen.runs.store import Store
from lfgen.training.tokenized import Shared, half_written, written


def _save(path: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"input_ids": [[1, 2], [3]]}),
                 "validation": Dataset.from_dict({"input_ids": [[4]]})}).save_to_disk(str(path))


@pytest.fixture
def store(tmp_path):
    for name, tokenized in (("a", "tok"), ("b", "./tok"), ("c", str(tmp_path / "tok")), ("d", "other"), ("e", None)):
        line = f"tokenized_path: {tokenized}\n" if tokenized else ""
        (tmp_path / f"{name}.yaml").write_text(f"output_dir: out/{name}\n{line}", encoding="utf-8")
    state = Store(tmp_path / "state.sqlite")
    state.sync_runs([(name, f"{name}.yaml", f"out/{name}") for name in "abcde"])
    yield state
    state.close()


def test_a_whole_save_is_written_and_a_cut_one_is_not(tmp_path):
    path = tmp_path / "tok"
    assert not written(path) and not half_written(path)
    path.mkdir()
    assert not written(path) and not half_written(path)  # empty: LlamaFactory tokenizes into it
    _save(path)
    assert written(path) and not half_written(path)
    (path / "validation" / "dataset_info.json").unlink()  # the last file save_to_disk writes, of its last split
    assert not written(path) and half_written(path)
    (path / "notes.txt").write_text("mine", encoding="utf-8")
    assert not half_written(path)  # not only datasets' files: never lfgen's to remove


def test_one_run_writes_a_path_the_others_wait_then_start_once_it_is_written(tmp_path, store):
    shared, said = Shared(tmp_path), []
    running: set[str] = set()
    assert not shared.hold(store, "a", running, said.append)  # the first writes it
    running.add("a")
    # b and c name the same folder (relative, ./, absolute): they wait; d's is another, e has none
    assert shared.hold(store, "b", running, said.append) and shared.hold(store, "c", running, said.append)
    assert not shared.hold(store, "d", running, said.append) and not shared.hold(store, "e", running, said.append)
    assert said == [f"b: waits for run a to write tokenized_path {tmp_path / 'tok'}",
                    f"c: waits for run a to write tokenized_path {tmp_path / 'tok'}"]
    assert [kind for _, _, kind, _ in store.events("b")] == ["waiting"]
    assert shared.ready(running) == []
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "dataset_dict.json").write_text('{"splits": ["train"]}', encoding="utf-8")
    assert shared.ready(running) == []  # being saved: still a's
    _save(tmp_path / "tok")
    assert shared.ready(running) == ["b", "c"]  # a trains on; the folder is whole
    assert not shared.hold(store, "b", running, said.append) and not shared.hold(store, "c", running, said.append)


def test_a_writer_that_ends_without_writing_hands_the_path_to_the_next(tmp_path, store):
    shared, said = Shared(tmp_path), []
    running = {"a"}
    shared.hold(store, "a", running, said.append)
    assert shared.hold(store, "b", running, said.append) and shared.hold(store, "c", running, said.append)
    _save(tmp_path / "tok")
    (tmp_path / "tok" / "train" / "state.json").unlink()  # a was killed mid-save
    running.discard("a")
    assert shared.ready(running) == ["b", "c"]
    assert not shared.hold(store, "b", running, said.append)  # b writes it now: the half save is removed first
    assert not (tmp_path / "tok").exists()
    assert said[-1] == (f"b: tokenized_path {tmp_path / 'tok'} was half written (its writer ended mid-save); "
                        "removed, it tokenizes again")
    running.add("b")
    assert shared.hold(store, "c", running, said.append)  # and c waits for b
    assert said[-1] == f"c: waits for run b to write tokenized_path {tmp_path / 'tok'}"


def test_a_writer_that_never_started_does_not_hold_the_path(tmp_path, store):
    shared = Shared(tmp_path)
    assert not shared.hold(store, "a", set(), print)  # a's start then failed (its output dir): it never ran
    assert not shared.hold(store, "b", set(), print)


def test_a_folder_that_is_not_a_save_is_left_alone(tmp_path, store):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "mine.txt").write_text("user data", encoding="utf-8")
    assert not Shared(tmp_path).hold(store, "a", set(), print)
    assert (tmp_path / "tok" / "mine.txt").read_text(encoding="utf-8") == "user data"


class _Asked:
    """A run source (lfgen tune's place in the runner) that counts how often it is asked and has nothing to give."""

    def __init__(self):
        self.asked = 0

    def next(self, store):
        self.asked += 1
        return None

    def admit(self, name):
        return True


def test_while_a_run_waits_the_runner_asks_its_source_for_no_new_run(project):
    """A sweep on 100,000 rows: both runs share tokenized_path (R-MULTI-KEYS). While rank-16 waits for rank-8 to
    write it, the runner does not ask its source (tune's Optuna) for another trial, which would wait too."""
    from collections import deque

    import yaml

    from lfgen.training.runner import Runner
    from lfgen.training.target import resolve
    from tests.helpers import Recorder, experiment

    made = experiment(runs=("8", "16"), samples=100_000)
    paths = {yaml.safe_load((made.path / entry.config).read_text())["tokenized_path"] for entry in made.manifest.runs}
    assert len(paths) == 1
    runner = Runner(resolve("exp"), Recorder())
    runner.store = Store(runner.target.state_path)
    try:
        runner.store.sync_runs(runner.target.runs)
        runner.source, runner.queue = _Asked(), deque(["rank-8", "rank-16"])
        say = runner.reporter.message
        assert runner._next() == ("train", "rank-8")
        assert not runner.shared.hold(runner.store, "rank-8", set(), say)  # started: it writes the folder
        assert runner._next() == ("train", "rank-16")
        assert runner.shared.hold(runner.store, "rank-16", {"rank-8"}, say)
        assert runner._next() is None and runner.source.asked == 0
        _save(project / paths.pop())
        assert runner.shared.ready({"rank-8"}) == ["rank-16"]  # written: rank-16 may start, the source is asked again
        assert runner._next() is None and runner.source.asked == 1
    finally:
        runner.store.close()
