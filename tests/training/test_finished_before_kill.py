"""A run whose training ended just before its runner died or was stopped (LlamaFactory had written the adapter and
all_results.json; lfgen had not recorded it done) is recorded done from its own files by the next command: never
trained again, its results never overwritten (a resume from its last checkpoint trains zero steps and rewrites
all_results.json: train_loss 0.0, a runtime of milliseconds).

The stand-in llamafactory-cli (mode finish-slow, tests/training/fake_llamafactory_cli.py) ONLY holds the moment open:
it ends a run as LlamaFactory does, then waits in its final evaluation, so the kill lands in that window every time.
The same race with real training: tests/tuning/test_tune_finished_e2e.py (slow)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from tests.helpers import alive, calls, event_kinds, experiment, modes, rows, run, start_lfgen, wait_for

RUN = "outputs/exp/rank-8"


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "lfgen_train.log"}


def _starts(project: Path) -> list[dict]:
    return [c for c in calls(project) if not c.get("finished")]


def _stop_after_results(project: Path, out: Path, *args: str, how: int = signal.SIGKILL, command: str = "run"):
    """Start lfgen, wait until the run wrote all_results.json (it then waits in its final evaluation), send *how*;
    returns lfgen's exit code and stderr once the stand-in is gone too."""
    lfgen = start_lfgen(project, *args, command=command)
    try:
        wait_for(lambda: (out / "all_results.json").is_file(), what="the run's all_results.json")
        lfgen.send_signal(how)
        _, err = lfgen.communicate(timeout=60)
    finally:
        if lfgen.poll() is None:
            lfgen.kill()
            lfgen.wait()
    started = _starts(project)
    wait_for(lambda: not any(alive(c["pid"]) for c in started), timeout=20, what="the stand-in to die with lfgen")
    return lfgen.returncode, err


def test_kill_9_after_the_results_were_written_records_the_run_done_and_never_trains_it_again(project, monkeypatch):
    experiment(runs=("8",))
    out = project / RUN
    modes(monkeypatch, rank_8="finish-slow:60")
    code, _ = _stop_after_results(project, out, "exp")
    assert code == -signal.SIGKILL and rows()["rank-8"].state == "running"  # what lfgen left: the race
    kept = _files(out)
    modes(monkeypatch)
    summary, recorder = run()
    assert summary.done == ["rank-8"] and rows()["rank-8"].attempts == 1
    assert len(_starts(project)) == 1  # one start, ever
    assert _files(out) == kept  # all_results.json (the training's figures) as LlamaFactory wrote them
    assert json.loads((out / "all_results.json").read_text())["train_loss"] == 1.1
    assert event_kinds("rank-8")[-1] == "recognised"
    assert any("finished before its last runner" in e[1] for e in recorder.events if e[0] == "message")
    assert "resume_from_checkpoint" not in (out / "lfgen_run.yaml").read_text()


def test_ctrl_c_after_the_results_were_written_leaves_the_run_done(project, monkeypatch):
    experiment(runs=("8", "16"))
    out = project / RUN
    modes(monkeypatch, rank_8="finish-slow:60")
    code, err = _stop_after_results(project, out, "exp", how=signal.SIGINT)
    assert code == 130, err
    assert rows()["rank-8"].state == "done" and rows()["rank-16"].state == "pending"
    kept = _files(out)
    modes(monkeypatch)
    summary, _ = run()
    assert summary.done == ["rank-8", "rank-16"] and rows()["rank-8"].attempts == 1 and _files(out) == kept


def test_a_run_recorded_interrupted_after_it_finished_is_recognised_done(project, monkeypatch):
    """What an earlier lfgen left after Ctrl-C in that window: the run interrupted, its results whole."""
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="finish-slow:0")
    run()
    store = Store(project / "experiments/exp/state.sqlite")
    for state in (RunState.PENDING, RunState.RUNNING, RunState.INTERRUPTED):
        store.transition("rank-8", state, reason="interrupted" if state is RunState.INTERRUPTED else None)
    store.close()
    kept = _files(project / RUN)
    summary, _ = run()
    assert summary.done == ["rank-8"] and len(_starts(project)) == 1 and _files(project / RUN) == kept


def test_a_cut_short_all_results_json_is_not_a_finished_run(project, monkeypatch):
    """Killed while LlamaFactory wrote all_results.json: not finished; the run trains again."""
    experiment(runs=("8",))
    out = project / RUN
    modes(monkeypatch, rank_8="finish-slow:60")
    _stop_after_results(project, out, "exp")
    (out / "all_results.json").write_text('{"epoch": 1.0, "train_lo')
    modes(monkeypatch)
    summary, _ = run()
    assert summary.done == ["rank-8"] and rows()["rank-8"].attempts == 2
    assert json.loads((out / "all_results.json").read_text())["train_loss"] == 1.1


def test_kill_9_of_the_tuner_after_a_trials_results_tells_the_trial_and_never_trains_it_again(project, monkeypatch):
    """The issue's reproduction. The kill lands in the final evaluation, so all_results.json has no eval_loss yet:
    the trial's value is the eval loss LlamaFactory logged at its last step, the same model on the same rows."""
    pytest.importorskip("optuna")
    from lfgen.runs.study import load_rows
    from lfgen.tuning.tuner import tune
    from lfgen.builder.options import BuildOptions
    from tests.helpers import Recorder

    (project / "space.yaml").write_text("lora_rank: {choices: [8, 16]}\n")
    out = project / "outputs/t/trial-000"
    modes(monkeypatch, **{"trial-000": "finish-slow:60"})
    code, _ = _stop_after_results(project, out, "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
                                  "--space", "space.yaml", "--trials", "2", "--pruner", "none", command="tune")
    assert code == -signal.SIGKILL
    assert [r["state"] for r in load_rows(project / "experiments/t")] == ["running"]
    kept = _files(out)
    modes(monkeypatch)
    result = tune("t", reporter=Recorder(), options=BuildOptions())
    assert [(r["run"], r["state"], r["value"]) for r in result.rows][0] == ("trial-000", "complete", 0.75)
    assert [r["state"] for r in result.rows] == ["complete", "complete"]
    assert _files(out) == kept and "eval_loss" not in json.loads((out / "all_results.json").read_text())
    assert [Path(c["argv"][2]).parent.name for c in _starts(project)] == ["trial-000", "trial-001"]
    assert os.path.getsize(project / "experiments/t/state.sqlite") > 0
