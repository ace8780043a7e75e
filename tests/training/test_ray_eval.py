"""lfgen eval --ray and lfgen run --eval --ray: where each evaluation goes (pure), and a REAL loopback Ray head.

The cluster fixture is the session's (tests/training/conftest.py: ray start --head on 127.0.0.1 with its own --temp-dir and token, its
processes stopped by pid even when a test fails). The stand-in llamafactory-cli (fake_llamafactory_cli.py)
gives a node that has left the cluster and a Ctrl-C mid-evaluation in seconds; the tiny model is trained and
evaluated for real by LlamaFactory in the last two tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfgen.errors import InputError
from lfgen.training.ray_eval import Place, last_placed, place

from ..conftest import needs_llamafactory
from tests.helpers import calls, experiment, modes, ray_run, rows

GONE_ID = "ab" * 28  # a node id no cluster here has


# --- where an evaluation goes (pure) ----------------------------------------------------------------

def _events(*kinds_messages):
    return [("run", float(i), kind, json.dumps(message)) for i, (kind, message) in enumerate(kinds_messages)]


def test_the_last_attempt_says_where_the_adapter_is():
    ray_attempt = {"node": "10.0.0.5", "node_id": "n1", "path": "/w/exp/a"}
    assert last_placed(_events(("started", {}), ("placed", ray_attempt), ("done", {}))) == ray_attempt
    # trained again without --ray: the adapter is the driver's, whatever an older attempt said
    assert last_placed(_events(("started", {}), ("placed", ray_attempt), ("started", {}), ("done", {}))) is None
    assert last_placed([]) is None


NODES = [{"NodeID": "n1", "NodeManagerAddress": "10.0.0.5", "Alive": True},
         {"NodeID": "n2", "NodeManagerAddress": "10.0.0.6", "Alive": True}]


def test_an_evaluation_is_pinned_to_the_node_that_holds_the_adapter(tmp_path):
    placed = {"node": "10.0.0.6", "node_id": "n2", "path": "/w/exp/a", "shared": False}
    assert place("a", "exp", placed, NODES, tmp_path, "n1") == Place("/w/exp/a", "n2", "10.0.0.6")
    assert place("a", "exp", {**placed, "shared": True}, NODES, tmp_path, "n1").node_id is None  # --storage: anywhere
    assert place("a", "exp", None, NODES, tmp_path, "n1") == Place(str(tmp_path), "n1", "the driver's node")
    # the same machine after its Ray node restarted (a new id, the same address): the files are where they were
    assert place("a", "exp", {**placed, "node_id": "old"}, NODES, tmp_path, "n1").node_id == "n2"


def test_a_node_that_left_the_cluster_is_one_line_naming_the_run_the_node_and_the_fix(tmp_path):
    placed = {"node": "10.0.0.9", "node_id": GONE_ID, "path": "/w/exp/a"}
    with pytest.raises(InputError) as error:
        place("a", "exp", placed, NODES, tmp_path, "n1")
    assert str(error.value) == (
        "run a: its adapter stayed on Ray node 10.0.0.9 (id abababababab), which is no longer in the cluster; bring "
        "that node back, or train the run again on shared storage so any node can evaluate it: lfgen run exp "
        "--rerun a --ray ADDRESS --storage SHARED_DIR")


def test_eval_ray_refuses_a_run_dir_and_a_bad_address(project, runner, cli):
    from .ray_head import free_port

    experiment(runs=("8",))
    run_dir = project / "outputs/exp/rank-8"
    run_dir.mkdir(parents=True)
    (run_dir / "lfgen_run.yaml").write_text("stage: sft\n")
    result = runner.invoke(cli, ["eval", str(run_dir), "--ray", "127.0.0.1:1"])
    assert result.exit_code == 1 and result.output.startswith("Error: --ray: give the experiment"), result.output
    result = runner.invoke(cli, ["eval", "exp", "--ray", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and result.output.startswith("Error: --ray: no Ray cluster at 127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1


# --- a real loopback cluster, the stand-in llamafactory-cli -------------------------------------------

def _store(project):
    from lfgen.runs.store import Store

    return Store(project / "experiments/exp/state.sqlite")


@pytest.mark.slow
def test_eval_ray_scores_where_the_adapter_is_and_a_gone_node_fails_only_its_run(project, on_cluster, runner,
                                                                                 cli, monkeypatch):
    address, workers = on_cluster
    experiment(runs=("8", "16", "32"))
    modes(monkeypatch, rank_32="predict-crash")  # trains, then LlamaFactory's predict fails
    summary, _ = ray_run(address)
    assert summary.done == ["rank-8", "rank-16", "rank-32"]
    store = _store(project)
    try:  # rank-16's node "left": its last attempt was placed on a node this cluster does not have
        store.event("rank-16", "placed", {"node": "10.255.0.9", "node_id": GONE_ID, "path": str(workers / "exp/rank-16"),
                                          "shared": False, "gpus": [], "pid": 1})
    finally:
        store.close()

    result = runner.invoke(cli, ["eval", "exp", "--ray", address])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("rank-16:")] == [
        "rank-16: evaluation failed: run rank-16: its adapter stayed on Ray node 10.255.0.9 (id abababababab), which "
        "is no longer in the cluster; bring that node back, or train the run again on shared storage so any node can "
        "evaluate it: lfgen run exp --rerun rank-16 --ray ADDRESS --storage SHARED_DIR"]
    assert any(line.startswith("rank-8: scored: 2 samples, accuracy 0.5") for line in lines), lines
    crashed = [line for line in lines if line.startswith("rank-32:")]
    assert len(crashed) == 1 and "evaluation failed (llamafactory-cli exit 1): RuntimeError: probability" in crashed[0]
    assert crashed[0].endswith(f"(on 127.0.0.1; its copy here: {project / 'outputs/exp/rank-32/eval/lfgen_eval.log'})")
    assert "probability tensor" in (project / "outputs/exp/rank-32/eval/lfgen_eval.log").read_text()  # came home
    predicted = sorted(c["argv"][2] for c in calls(project) if c.get("predict") and "finished" not in c)
    assert predicted == [str(workers / f"exp/{run}/eval/lfgen_eval.yaml") for run in ("rank-32", "rank-8")]
    home = project / "outputs/exp/rank-8"
    for name in ("lfgen_scores.json", "predict_results.json", "generated_predictions.jsonl", "lfgen_eval.yaml",
                 "lfgen_eval.log"):
        assert (home / "eval" / name).is_file(), f"{name} did not come home"
    assert not (home / "adapter_model.safetensors").exists()  # the adapter stayed on the worker
    store = _store(project)
    try:
        assert store.evaluation("rank-8") == ("done", "2 samples scored")
        state, detail = store.evaluation("rank-16")
        assert state == "failed" and "no longer in the cluster" in detail
        assert store.evaluation("rank-32")[0] == "failed"
    finally:
        store.close()
    assert rows()["rank-16"].state == rows()["rank-32"].state == "done"  # the training's state is untouched

    scored_at = (home / "eval/lfgen_scores.json").stat().st_mtime_ns
    again = runner.invoke(cli, ["eval", "exp", "--ray", address])
    assert again.exit_code == 1 and "rank-8: already scored" in again.output, again.output
    assert (home / "eval/lfgen_scores.json").stat().st_mtime_ns == scored_at  # never re-scored
    assert len([c for c in calls(project) if c.get("predict") and "finished" not in c]) == 3  # rank-32 again only


@pytest.mark.slow
def test_ctrl_c_of_eval_ray_stops_the_evaluation_and_records_it(project, on_cluster, monkeypatch):
    address, _ = on_cluster
    experiment(runs=("8",))
    summary, _ = ray_run(address)
    assert summary.done == ["rank-8"]
    modes(monkeypatch, rank_8="slow:1")  # the prediction takes 200 s
    lfgen = subprocess.Popen([sys.executable, "-m", "lfgen", "eval", "exp", "--ray", address], cwd=project,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not [c for c in calls(project) if c.get("predict")] and time.monotonic() < deadline:
            assert lfgen.poll() is None, lfgen.communicate()
            time.sleep(0.1)
        child = [c for c in calls(project) if c.get("predict")][0]["pid"]
        lfgen.send_signal(signal.SIGINT)
        _, err = lfgen.communicate(timeout=60)
    finally:
        if lfgen.poll() is None:
            lfgen.kill()
    assert lfgen.returncode != 0 and "Traceback" not in err, err
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    store = _store(project)
    try:
        assert store.evaluation("rank-8") == ("failed", "stopped with Ctrl-C; lfgen eval evaluates it again")
    finally:
        store.close()
    assert not (project / "outputs/exp/rank-8/eval/lfgen_scores.json").exists()


# --- a real loopback cluster, the tiny model trained and evaluated by LlamaFactory --------------------

def _tiny_project(tmp_path, monkeypatch, *runs):
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LFGEN_RAY_ENV": ""}

    def lfgen(*args):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=tmp_path, capture_output=True, text=True,
                              env=env, timeout=600, check=False)
        print(f"lfgen {' '.join(args[:2])}: {time.perf_counter() - started:.1f} s")
        return done

    sets = [arg for key, value in CPU_SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen("sweep", "rank", *runs, "--base", "lightweight", "--model", "./tiny-model", "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny", *sets)
    assert sweep.returncode == 0, sweep.stderr
    return lfgen


def _scored_on_the_worker(tmp_path, workers, run):
    home = tmp_path / "outputs/tiny" / run
    scores = json.loads((home / "eval/lfgen_scores.json").read_text())
    assert scores["samples_scored"] == 4  # val_size 0.1 of 40 rows
    assert (home / "eval/predict_results.json").is_file() and (home / "eval/generated_predictions.jsonl").is_file()
    assert not (home / "adapter_model.safetensors").exists()  # the adapter stayed on the worker ...
    assert f"output_dir: {workers / 'tiny' / run / 'eval'}" in (home / "eval/lfgen_eval.yaml").read_text()  # ... and
    # the evaluation ran there, beside it


def _evaluations(tmp_path):
    from lfgen.runs.store import Store

    store = Store(tmp_path / "experiments/tiny/state.sqlite")
    try:
        return {run.name: store.evaluation(run.name) for run in store.runs()}
    finally:
        store.close()


@pytest.mark.slow
@needs_llamafactory
def test_eval_ray_evaluates_runs_trained_on_ray_for_real(on_cluster, tmp_path, monkeypatch):
    address, workers = on_cluster
    lfgen = _tiny_project(tmp_path, monkeypatch, "4", "8")
    trained = lfgen("run", "tiny", "--ray", address, "--quiet")
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = lfgen("eval", "tiny", "--ray", address, "--max-new-tokens", "8")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "rank-4: scored: 4 samples" in evaluated.stderr and "rank-8: scored: 4 samples" in evaluated.stderr
    for run in ("rank-4", "rank-8"):
        _scored_on_the_worker(tmp_path, workers, run)
    assert _evaluations(tmp_path) == {"rank-4": ("done", "4 samples scored"), "rank-8": ("done", "4 samples scored")}
    compare = lfgen("compare", "experiments/tiny", "--sort", "predict_rouge-l", "--format", "json")
    assert compare.returncode == 0, compare.stderr
    assert all(isinstance(row["predict_rouge-l"], float) for row in json.loads(compare.stdout))
    again = lfgen("eval", "tiny", "--ray", address)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rank-4: already scored" in again.stderr and "rank-8: already scored" in again.stderr


@pytest.mark.slow
@needs_llamafactory
def test_run_eval_ray_trains_then_scores_each_run_on_its_node(on_cluster, tmp_path, monkeypatch):
    address, workers = on_cluster
    lfgen = _tiny_project(tmp_path, monkeypatch, "4", "8")
    done = lfgen("run", "tiny", "--ray", address, "--eval", "--max-new-tokens", "8", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank-4: scored: 4 samples" in done.stderr and "rank-8: scored: 4 samples" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("tiny: 2 done, 0 failed")  # scored before the summary
    for run in ("rank-4", "rank-8"):
        _scored_on_the_worker(tmp_path, workers, run)
    assert _evaluations(tmp_path) == {"rank-4": ("done", "4 samples scored"), "rank-8": ("done", "4 samples scored")}
    again = lfgen("eval", "tiny")  # the driver's copy is scored: nothing to do, no Ray needed
    assert again.returncode == 0 and "rank-4: already scored" in again.stderr, again.stderr


@pytest.mark.slow
def test_tune_ray_on_an_eval_metric_scores_each_trial_where_it_trained(project, on_cluster, runner, cli):
    """lfgen tune --metric predict_rouge-l --ray: each trial's evaluation is a Ray task beside its adapter (the
    stand-in predicts ROUGE-L 50), and the study is told the score that came home."""
    pytest.importorskip("optuna")
    address, workers = on_cluster
    (project / "space.yaml").write_text("lora_rank: {choices: [8, 16]}\nlearning_rate: {low: 1.0e-4, high: 5.0e-4}\n")
    result = runner.invoke(cli, ["tune", "t", "--base", "a800", "--model", "fake/model", "--gpu", "A800",
                                 "--space", "space.yaml", "--trials", "2", "--pruner", "none", "--metric",
                                 "predict_rouge-l", "--ray", address])
    assert result.exit_code == 0, result.output
    from lfgen.runs.study import load_rows

    assert [(row["state"], row["value"]) for row in load_rows(project / "experiments/t")] == [("complete", 50.0)] * 2
    predicted = [c["argv"][2] for c in calls(project) if c.get("predict") and "finished" not in c]
    assert len(predicted) == 2 and all(path.startswith(str(workers / "t")) for path in predicted), predicted
    assert (project / "outputs/t/trial-000/eval/predict_results.json").is_file()  # came home
