"""Reading TensorBoard event files written by the writer transformers' TensorBoardCallback uses
(torch.utils.tensorboard.SummaryWriter), with the tags it writes (cpu-e2e.md §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfgen.runs.reader import read_run
from tests.results.lf_files import Curves, decay, write_run

pytest.importorskip("tensorboard")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter

LOSS = decay(30)


def write_events(run_dir: Path, stamp: str = "Nov23_00-10-49_vm") -> Path:
    """What HF logs through on_log: train/* every step, eval/* at eval steps, plus the final evaluate."""
    log_dir = run_dir / "runs" / stamp
    writer = SummaryWriter(log_dir=str(log_dir))
    for step, loss in enumerate(LOSS, start=1):
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/grad_norm", 0.5 + step / 100, step)
        writer.add_scalar("train/learning_rate", 2e-4, step)
        writer.add_scalar("train/epoch", step / 10, step)
        if step % 10 == 0:
            writer.add_scalar("eval/loss", 2.0 - step / 100, step)
    writer.add_scalar("eval/loss", 1.65, 30)  # the final evaluate() logs the last step again
    writer.add_scalar("train/train_loss", sum(LOSS) / len(LOSS), 30)
    writer.close()
    return log_dir


def test_curves_come_from_tensorboard_when_there_is_no_log(tmp_path: Path) -> None:
    log_dir = write_events(tmp_path / "r")
    assert any(p.name.startswith("events.out.tfevents.") for p in log_dir.iterdir())
    run = read_run(tmp_path / "r")
    assert run.sources == {"curves": "runs/Nov23_00-10-49_vm", "grad_norm": "runs/Nov23_00-10-49_vm"}
    assert run.train_loss.steps == [float(s) for s in range(1, 31)]
    assert run.train_loss.values == pytest.approx(LOSS, rel=1e-6)  # float32 in the event file
    assert run.eval_loss.steps == [10.0, 20.0, 30.0]
    assert run.eval_loss.values == pytest.approx([1.9, 1.8, 1.65], rel=1e-6)  # last value per step wins
    assert run.grad_norm.values[-1] == pytest.approx(0.8, rel=1e-6)
    assert run.learning_rate.values[0] == pytest.approx(2e-4, rel=1e-6)
    assert run.current_step == 30


def test_grad_norm_from_tensorboard_for_a_run_still_in_its_first_steps(tmp_path: Path) -> None:
    # Running, no checkpoint yet: trainer_log.jsonl has the loss, only TensorBoard has grad_norm.
    run_dir = write_run(tmp_path / "r", Curves(LOSS), finished=False, total_steps=100)
    write_events(run_dir)
    run = read_run(run_dir)
    assert run.sources == {"curves": "trainer_log.jsonl", "grad_norm": "runs/Nov23_00-10-49_vm"}
    assert len(run.grad_norm) == 30 and run.state == "running"
