"""lfgen.training.watch: progress from trainer_log.jsonl, the NaN watchdog, and logs that are not clean."""

from __future__ import annotations

import json
import math

import pytest

from lfgen.layout import TRAINER_LOG
from lfgen.training.watch import RunWatcher


def _line(**record) -> str:
    return json.dumps(record) + "\n"


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path


def watcher(run_dir) -> RunWatcher:
    return RunWatcher(run_dir, run_dir / "lfgen_train.log")


def append(path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_progress_from_llamafactorys_log_lines(run_dir):
    # as LlamaFactory's LogCallback writes them (RECORD_VRAM=1)
    append(run_dir / TRAINER_LOG, _line(current_steps=5, total_steps=20, loss=1.8, lr=2e-4, epoch=0.25,
                                        percentage=25.0, elapsed_time="0:00:10", remaining_time="0:00:30",
                                        vram_allocated=3.1, vram_reserved=4.5))
    append(run_dir / TRAINER_LOG, _line(current_steps=10, total_steps=20, eval_loss=1.6, epoch=0.5, percentage=50.0,
                                        elapsed_time="0:00:20", remaining_time="0:00:20", vram_reserved=4.0))
    p = watcher(run_dir).poll()
    assert (p.step, p.total, p.loss, p.eval_loss, p.percentage, p.remaining) == (10, 20, 1.8, 1.6, 50.0, "0:00:20")
    assert p.vram_gib == 4.5 and p.nan is None  # the peak, not the last
    assert p.as_dict() == {"step": 10, "total": 20, "loss": 1.8, "eval_loss": 1.6, "vram_gib": 4.5}


def test_a_partial_last_line_waits_for_the_rest(run_dir):
    w = watcher(run_dir)
    append(run_dir / TRAINER_LOG, '{"current_steps": 3, "total_')
    assert w.poll().step == 0
    append(run_dir / TRAINER_LOG, 'steps": 9}\n')
    assert (w.poll().step, w.progress.total) == (3, 9)


@pytest.mark.parametrize("bad", ['{"current_steps": "abc", "total_steps": null, "loss": "x", "percentage": "?"}',
                                 '{"current_steps": null, "total_steps": "9x", "vram_reserved": "n/a"}',
                                 '{"current_steps": 1e400, "total_steps": NaN, "eval_loss": null}',
                                 '{"current_steps": [1], "total_steps": {"a": 1}, "loss": true}',
                                 '[1, 2, 3]', '"just a string"', "not json at all", "{broken"])
def test_a_bad_line_does_not_crash_the_watcher_and_keeps_the_last_values(run_dir, bad):
    append(run_dir / TRAINER_LOG, _line(current_steps=4, total_steps=10, loss=1.5, percentage=40.0, vram_reserved=2.0))
    append(run_dir / TRAINER_LOG, bad + "\n")
    append(run_dir / TRAINER_LOG, _line(percentage=41.0))
    p = watcher(run_dir).poll()
    assert (p.step, p.total, p.loss, p.vram_gib, p.nan) == (4, 10, 1.5, 2.0, None)


def test_numbers_written_as_strings_are_read(run_dir):
    append(run_dir / TRAINER_LOG, _line(current_steps="7", total_steps="10.0", loss="0.5"))
    p = watcher(run_dir).poll()
    assert (p.step, p.total, p.loss) == (7, 10, 0.5)


@pytest.mark.parametrize("record,why", [
    ({"current_steps": 3, "loss": math.nan}, "loss nan at step 3"),
    ({"current_steps": 3, "loss": math.inf}, "loss inf at step 3"),
    ({"current_steps": 4, "eval_loss": math.nan}, "eval_loss nan at step 4"),
    ({"current_steps": 5, "loss": "NaN"}, "loss nan at step 5"),
])
def test_nan_in_the_jsonl_is_caught(run_dir, record, why):
    append(run_dir / TRAINER_LOG, _line(current_steps=2, loss=1.0))
    append(run_dir / TRAINER_LOG, json.dumps(record) + "\n")  # Python's json writes NaN / Infinity
    assert watcher(run_dir).poll().nan == why


@pytest.mark.parametrize("console,why", [
    ("{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 0.0002, 'epoch': 0.1}",
     "loss 0 with grad_norm NaN (LlamaFactory #2916, #8088)"),
    ("{'loss': '0.0000', 'grad_norm': 'nan', 'learning_rate': '2.000e-04', 'epoch': '0.10'}",  # transformers 5
     "loss 0 with grad_norm NaN (LlamaFactory #2916, #8088)"),
    ("{'loss': nan, 'grad_norm': 0.3, 'learning_rate': 0.0002, 'epoch': 0.1}", "loss nan"),
])
def test_nan_on_the_console_is_caught(run_dir, console, why):
    append(run_dir / "lfgen_train.log", "[INFO|trainer.py:2519] >> ***** Running training *****\n" + console + "\n")
    p = watcher(run_dir).poll()
    assert p.nan == why and p.tail[-1] == console


def test_healthy_console_lines_are_not_nan(run_dir):
    append(run_dir / "lfgen_train.log", "{'loss': 1.2, 'grad_norm': 0.4, 'learning_rate': 0.0002, 'epoch': 0.1}\n"
                                        "{'loss': 0.0, 'grad_norm': 0.0, 'epoch': 0.2}\n{'train_runtime': 1.0}\n")
    assert watcher(run_dir).poll().nan is None


def test_skip_existing_starts_at_the_end_for_a_resumed_run(run_dir):
    append(run_dir / TRAINER_LOG, _line(current_steps=9, loss=math.nan))  # the failed attempt before
    w = watcher(run_dir)
    w.skip_existing()
    append(run_dir / TRAINER_LOG, _line(current_steps=1, total_steps=5, loss=2.0))
    p = w.poll()
    assert (p.step, p.nan) == (1, None)


def test_missing_files_are_no_progress_yet(run_dir):
    w = watcher(run_dir / "not-yet")
    w.skip_existing()
    assert w.poll().step == 0
