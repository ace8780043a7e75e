"""What `lfgen run` and `lfgen status` say about a failed run: the cause, the file to fix, the log.

The crash comes from the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py): a crash at a
chosen step cannot be produced on demand on a CPU. The real missing-model failure is
tests/training/test_failure_e2e.py.
"""

from __future__ import annotations

import json

from tests.helpers import experiment, modes, rows, run


def test_run_and_status_name_the_cause_and_the_log(project, monkeypatch, runner, cli):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="crash")
    result = runner.invoke(cli, ["run", "exp", "--quiet"])
    first = "it crashed (exit 1) with no cause lfgen recognises; see the log: outputs/exp/rank-8/lfgen_train.log"
    assert result.exit_code == 1
    assert f"run rank-8 failed: {first}\n" in result.stderr and "NCCL error" in result.stderr
    status = json.loads(runner.invoke(cli, ["status", "exp", "--json"]).stdout)
    assert status[0]["detail"].splitlines()[0] == first
    table = runner.invoke(cli, ["status", "exp"], terminal_width=400)
    assert "lfgen_train.log" in table.stdout


def test_an_oom_at_micro_batch_1_names_the_log(project, monkeypatch):
    experiment(runs=("8",), gpu="RTX 4090")
    modes(monkeypatch, rank_8="oom")
    run()
    first = rows()["rank-8"].detail.splitlines()[0]
    assert first.startswith("out of memory at micro-batch 1. R-DIAG-OOM")
    assert first.endswith("; log: outputs/exp/rank-8/lfgen_train.log")


def test_a_nan_names_the_log(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="nan-at:2")
    run()
    detail = rows()["rank-8"].detail
    assert detail.startswith("the loss went NaN (loss nan at step 2)")
    assert detail.endswith("; log: outputs/exp/rank-8/lfgen_train.log")
