"""RunWatcher's progress from trainer_log.jsonl: the measured VRAM."""

from __future__ import annotations

import json

import pytest

from lfgen.training.watch import RunWatcher


def _log(out, reserved):
    out.mkdir(parents=True, exist_ok=True)
    lines = [{"current_steps": i + 1, "total_steps": len(reserved), "loss": 1.0, "vram_allocated": v,
              "vram_reserved": v} for i, v in enumerate(reserved)]
    (out / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize("reserved, peak", [([-0.0, -0.0, -0.0], None), ([10.0, 12.5, 11.0], 12.5),
                                            ([-0.0, 3.0], 3.0)])
def test_vram_is_the_peak_and_none_on_the_cpu(tmp_path, reserved, peak):
    out = tmp_path / "run"
    _log(out, reserved)
    progress = RunWatcher(out, out / "lfgen_train.log").poll()
    assert progress.vram_gib == peak and progress.step == len(reserved)
