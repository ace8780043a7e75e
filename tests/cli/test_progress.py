"""Progress without a terminal (issue 21 item 9): a non-TTY `lfgen run` printed "started" and "done" only, 7 minutes
with no step, loss or ETA; now a plain line per running run at a steady interval. And the small words: a pruned
run says where it stopped once ("pruned: pruned - pruned"), a tune's parameters show 4 digits, not 16."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from lfgen.cli.progress import PlainReporter
from lfgen.numbers import setting
from lfgen.training.watch import Progress

from tests.helpers import experiment, modes


def test_a_line_per_run_at_its_first_step_then_every_interval():
    now = [0.0]
    stream = io.StringIO()
    reporter = PlainReporter(stream=stream, every=30, clock=lambda: now[0])
    reporter.progress("r8", Progress())  # nothing logged yet: no line
    for t, step in ((1, 3), (10, 6), (29, 9), (32, 12), (40, 15), (63, 18)):
        now[0] = t
        reporter.progress("r8", Progress(step=step, total=60, loss=1.23456, eval_loss=1.5, remaining="0:01:30"))
    lines = stream.getvalue().splitlines()
    assert lines == ["[r8] step 3/60 (5%), loss 1.235, eval 1.5, ETA 0:01:30",
                     "[r8] step 12/60 (20%), loss 1.235, eval 1.5, ETA 0:01:30",
                     "[r8] step 18/60 (30%), loss 1.235, eval 1.5, ETA 0:01:30"]
    reporter.finished("r8", "pruned", "pruned", "pruned at step 18 (eval_loss 1.5)")
    reporter.finished("r4", "interrupted", "interrupted", "stopped with Ctrl-C")
    assert stream.getvalue().splitlines()[3:] == ["[r8] pruned at step 18 (eval_loss 1.5)",
                                                  "[r4] interrupted: stopped with Ctrl-C"]


def test_parameters_show_four_digits():
    assert setting(0.00023456789012345678) == "0.0002346" and setting(16) == "16" and setting(True) == "true"
    assert setting(0.1) == "0.1" and setting(["q_proj", "v_proj"]) == "q_proj,v_proj"


def test_a_run_without_a_terminal_prints_its_progress(project, monkeypatch):
    """`lfgen run` in a pipe: step, loss and ETA lines while the run trains (the stand-in llamafactory-cli logs 200
    steps of 0.02 s, as tests/training/test_results_kept.py uses it: the reporting is under test, not training)."""
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="slow:0.02")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-m", "lfgen", "run", "exp", "--progress-every", "1"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if re.match(r"\[rank-8\] step \d+/200 \(\d+%\), loss ", line)]
    assert len(lines) >= 2 and all("ETA " in line for line in lines), done.stderr
    assert "[rank-8] started" in done.stderr and "[rank-8] done" in done.stderr


def test_status_of_a_tune_shows_each_trials_parameters_and_value(project, runner, cli):
    import pytest

    pytest.importorskip("optuna")
    from lfgen.builder.options import BuildOptions
    from lfgen.tuning.tuner import tune

    from tests.helpers import Recorder

    (project / "space.yaml").write_text("learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\n")
    tune("t", base="a800", options=BuildOptions.parse(model="fake/model", gpu="A800"), space="space.yaml", trials=2,
         pruner="none", reporter=Recorder())
    shown = runner.invoke(cli, ["status", "t"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "parameters" in shown.stdout and "value" in shown.stdout
    assert re.search(r"learning_rate=0\.000\d{4}\b", shown.stdout)  # 4 significant digits, not Optuna's 16
    rows = json.loads(runner.invoke(cli, ["status", "t", "--json"]).stdout)
    assert [set(row["params"]) for row in rows] == [{"learning_rate"}] * 2
    assert all(isinstance(row["value"], float) for row in rows)
