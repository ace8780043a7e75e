"""A run's evaluation is a tracked child of the runner (lfgen/training/evaluations.py): local `lfgen run --eval`
evaluates a run in its GPU slot while the other runs go on being watched, and one Ctrl-C path stops training
runs and evaluations alike. The stand-in llamafactory-cli times the runs and the predictions (ONLY that: the real
evaluation is tests/test_e2e_eval.py); the NaN is the stand-in's too, which a CPU run cannot produce at will."""

from __future__ import annotations

import json
import signal
import sqlite3

from lfgen.training.evaluate import EvalOptions
from lfgen.training.evaluations import LocalEvaluations
from tests.helpers import alive, calls, experiment, fake_gpus, rows, run, start_lfgen, wait_for


def _evaluations(project) -> dict[str, tuple[str, float | None, str | None]]:
    with sqlite3.connect(project / "experiments/exp/state.sqlite") as db:
        return {run: (state, ended, detail) for run, state, ended, detail in
                db.execute("SELECT run, state, ended, detail FROM evaluations")}


def test_the_nan_watchdog_and_the_free_gpu_go_on_while_a_run_evaluates(project, monkeypatch):
    """rank-8 trains at once, then evaluates for 4 s on its GPU; rank-16 goes NaN on the other GPU a second in.
    The evaluation used to run inside the runner's loop: nothing was polled until it ended, so rank-16 trained
    on with a NaN loss and rank-32 waited. Now rank-16 is stopped at once and rank-32 takes its GPU."""
    fake_gpus(project, 2)
    experiment(runs=("8", "16", "32"))
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({"rank-8/eval": "slow:0.02", "rank-16": "nan-at:3"}))
    summary, recorder = run(gpus=[0, 1], evaluations=LocalEvaluations(EvalOptions()))
    assert (summary.done, summary.failed) == (["rank-8", "rank-32"], ["rank-16"])
    evaluated = _evaluations(project)
    assert evaluated["rank-8"][0] == "done" and evaluated["rank-32"][0] == "done"
    state = rows()
    assert state["rank-16"].reason == "nan" and state["rank-16"].ended < evaluated["rank-8"][1] - 1.0
    starts = {c["argv"][2]: c for c in calls(project) if "finished" not in c}
    rank_32 = starts["outputs/exp/rank-32/lfgen_run.yaml"]
    predict_8 = next(c for c in calls(project) if c.get("predict") and "rank-8" in c["argv"][2] and "finished" not in c)
    assert predict_8["env"]["CUDA_VISIBLE_DEVICES"] == "0"  # in rank-8's own slot
    assert rank_32["env"]["CUDA_VISIBLE_DEVICES"] == "1" and rank_32["start"] < evaluated["rank-8"][1]
    assert ("evaluated", "rank-8", "scored", None) in recorder.events


def test_ctrl_c_stops_the_evaluation_and_records_it_as_for_a_run(project, monkeypatch):
    experiment(runs=("8",))
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({"rank-8/eval": "slow:1"}))  # the prediction takes 200 s
    lfgen = start_lfgen(project, "exp", "--eval")
    try:
        predict = wait_for(lambda: [c for c in calls(project) if c.get("predict")], what="the evaluation")[0]
        lfgen.send_signal(signal.SIGINT)
        _, err = lfgen.communicate(timeout=60)
    finally:
        if lfgen.poll() is None:
            lfgen.kill()
            lfgen.wait()
    assert lfgen.returncode == 130, err
    assert "interrupted: the running runs were stopped and will resume with the next lfgen run" in err
    assert "Traceback" not in err
    wait_for(lambda: not alive(predict["pid"]), timeout=10, what="the predict process to stop")
    assert _evaluations(project)["rank-8"][0::2] == ("failed", "stopped with Ctrl-C; lfgen eval evaluates it again")
    assert rows()["rank-8"].state == "done"  # the training's own state is untouched


def test_ctrl_c_of_lfgen_eval_here_takes_the_same_path(project, monkeypatch):
    experiment(runs=("8",))
    run()
    monkeypatch.setenv("FAKE_LF_MODES", json.dumps({"rank-8/eval": "slow:1"}))
    lfgen = start_lfgen(project, "exp", command="eval")
    try:
        predict = wait_for(lambda: [c for c in calls(project) if c.get("predict")], what="the evaluation")[0]
        lfgen.send_signal(signal.SIGTERM)
        _, err = lfgen.communicate(timeout=60)
    finally:
        if lfgen.poll() is None:
            lfgen.kill()
            lfgen.wait()
    assert lfgen.returncode == 143, err
    assert "terminated (SIGTERM): the running evaluations were stopped; lfgen eval exp evaluates them again" in err
    wait_for(lambda: not alive(predict["pid"]), timeout=10, what="the predict process to stop")
    assert _evaluations(project)["rank-8"][0] == "failed"
