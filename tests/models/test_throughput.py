"""A run's measured speed from the files LlamaFactory writes (lfgen/models/throughput.py). The real files of a
trained tiny run are read in tests/test_e2e.py; these cases pin the keys and the fallbacks."""

from __future__ import annotations

import json

import pytest

from lfgen.errors import InputError
from lfgen.models.throughput import measured_throughput


def _log(run, *records):
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_finished_run_reads_all_results(tmp_path):
    _log(tmp_path, {"current_steps": 100, "total_steps": 100, "loss": 1.0, "elapsed_time": "0:10:00"})
    (tmp_path / "all_results.json").write_text(json.dumps({
        "train_runtime": 590.0, "train_steps_per_second": 0.17, "train_samples_per_second": 5.4,
        "effective_tokens_per_sec": 2100.5, "epoch": 3.0}))
    found = measured_throughput(tmp_path)
    assert found.finished and found.runtime_s == 590.0 and found.step_s == pytest.approx(1 / 0.17)
    assert (found.tokens_per_s, found.tokens_source) == (2100.5, "effective_tokens_per_sec")
    assert found.remaining_s == 0


def test_a_running_run_reads_its_log(tmp_path):
    _log(tmp_path, {"current_steps": 10, "total_steps": 40, "elapsed_time": "0:02:00", "total_tokens": 24000},
         {"current_steps": 20, "total_steps": 40, "elapsed_time": "0:04:00", "total_tokens": 48000})
    (tmp_path / "trainer_log.jsonl").open("a").write('{"current_steps": 2')  # a line still being written
    found = measured_throughput(tmp_path)
    assert not found.finished and (found.steps, found.total_steps, found.runtime_s) == (20, 40, 240.0)
    assert found.step_s == 12.0 and found.remaining_s == 240.0
    assert found.tokens_per_s == 200.0 and "padding included" in found.tokens_source


def test_a_folder_without_run_files_is_an_error(tmp_path):
    with pytest.raises(InputError, match="trainer_log.jsonl"):
        measured_throughput(tmp_path)
