"""Finished and live results are never destroyed (issue 14, "Results destroyed"): one lock per output dir
whichever way a run is reached, no training into another config's finished results, a lost state rebuilt
from the runs' own files, and no experiment replaced while a runner holds it.

The live-run scenarios use the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) in its
`slow` mode, so the test controls when the run is in flight; test_results_kept_e2e.py covers the main one
(another door onto a live run) with real training of the tiny model.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from lfgen.runs.lock import Lock

from tests.helpers import calls, experiment, modes, rows, run, wait_for


def one_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def start_lfgen(*args: str) -> subprocess.Popen:
    """`lfgen ARGS` in the background (this worktree's lfgen, the stand-in first on PATH)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.Popen([sys.executable, "-m", "lfgen", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop(proc: subprocess.Popen) -> str:
    """Ctrl-C the runner by its pid, as a user would; it stops its run and exits 130."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err


def live_run(project: Path, monkeypatch, *args: str) -> subprocess.Popen:
    modes(monkeypatch, rank_8="slow:0.05")  # 200 steps of 0.05 s: in flight for the whole test
    proc = start_lfgen("run", *args, "--quiet")
    log = project / "outputs/exp/rank-8/trainer_log.jsonl"
    wait_for(lambda: log.is_file() and log.stat().st_size > 0 or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()
    return proc


# --- 1. one lock per output dir, whichever door --------------------------------------------------------


def test_the_run_config_of_a_live_experiment_run_is_refused(project, monkeypatch, runner, cli):
    experiment(runs=("8",))
    proc = live_run(project, monkeypatch, "exp")
    try:
        log = project / "outputs/exp/rank-8/trainer_log.jsonl"
        result = runner.invoke(cli, ["run", "experiments/exp/runs/rank-8.yaml"])
        one_error(result, "output dir outputs/exp/rank-8 of run rank-8 is already being trained into by "
                          f"lfgen pid {proc.pid}", "run rank-8 of exp")
        size = log.stat().st_size
        wait_for(lambda: log.stat().st_size > size)  # the live run goes on, its files untouched
        assert len(calls(project)) == 1  # nothing else was started
        assert rows("experiments/exp/runs/rank-8.yaml")["rank-8"].state == "pending"  # neither failed nor running
    finally:
        stop(proc)
    assert rows()["rank-8"].state == "interrupted"  # stopped by the test's Ctrl-C, not "crashed"


def test_an_experiment_is_refused_while_its_run_config_trains_its_output_dir(project, monkeypatch, runner, cli):
    experiment(runs=("8",))
    proc = live_run(project, monkeypatch, "experiments/exp/runs/rank-8.yaml")
    try:
        one_error(runner.invoke(cli, ["run", "exp"]), "output dir outputs/exp/rank-8", f"lfgen pid {proc.pid}")
        assert len(calls(project)) == 1
    finally:
        stop(proc)


def test_the_output_dir_lock_is_let_go_when_a_run_ends(project):
    experiment(runs=("8", "16"))
    summary, _ = run()
    assert summary.done == ["rank-8", "rank-16"]
    from lfgen.training import outputs

    assert outputs.holder(project / "outputs/exp/rank-8") is None
    with Lock(project / "outputs/.rank-8.lfgen-lock", "x"):  # a held lock names its holder
        assert outputs.holder(project / "outputs/rank-8") == f"lfgen pid {os.getpid()} (started " + \
            outputs.holder(project / "outputs/rank-8").split("(started ", 1)[1]


# --- 2. never into another config's finished results -----------------------------------------------------


def preset(runner, cli, out: str, *args: str) -> None:
    result = runner.invoke(cli, ["preset", "a800", "--model", "fake/model", "--samples", "5000", *args, "-o", out])
    assert result.exit_code == 0, result.output


def test_a_config_never_trains_into_another_configs_finished_results(project, runner, cli):
    preset(runner, cli, "a.yaml", "--lr", "1e-4", "--output-dir", "outputs/shared")
    preset(runner, cli, "b.yaml", "--lr", "2e-4", "--output-dir", "outputs/shared")
    assert runner.invoke(cli, ["run", "a.yaml", "--quiet"]).exit_code == 0
    shared = project / "outputs/shared"
    kept = {name: (shared / name).read_bytes() for name in ("lfgen_run.yaml", "all_results.json", "trainer_log.jsonl")}
    result = runner.invoke(cli, ["run", "b.yaml", "--quiet"])
    one_error(result, "output_dir outputs/shared holds the finished results of another config",
              "outputs/shared/lfgen_run.yaml (made from a.yaml) differs from b.yaml in learning_rate", "--force")
    assert {name: (shared / name).read_bytes() for name in kept} == kept
    assert len([c for c in calls(project) if "finished" not in c]) == 1  # b never started
    status = json.loads(runner.invoke(cli, ["status", "a.yaml", "--json"]).stdout)
    assert status[0]["state"] == "done"
    assert runner.invoke(cli, ["run", "b.yaml", "--quiet", "--force"]).exit_code == 0  # --force replaces them
    assert yaml.safe_load((shared / "lfgen_run.yaml").read_text())["learning_rate"] == 2e-4


def test_the_same_config_resumes_and_an_oom_adjustment_is_the_same_config(project, monkeypatch):
    from lfgen.training import outputs

    experiment(runs=("8",))
    modes(monkeypatch, rank_8="oom-above:4")
    run()
    out = project / "outputs/exp/rank-8"
    config = yaml.safe_load((project / "experiments/exp/runs/rank-8.yaml").read_text())
    used = yaml.safe_load((out / "lfgen_run.yaml").read_text())
    assert used["per_device_train_batch_size"] != config["per_device_train_batch_size"]
    assert outputs.finished(out, config)  # micro-batch x accumulation kept: the same config
    assert not outputs.finished(out, {**config, "learning_rate": 1.0})


# --- 3. a lost or emptied state is rebuilt from the runs' own files ---------------------------------------


def test_a_deleted_or_emptied_state_does_not_retrain_finished_runs(project):
    experiment()
    run()
    before = len(calls(project))
    adapter = project / "outputs/exp/rank-8/adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns
    state = project / "experiments/exp/state.sqlite"
    for lose in (lambda: state.unlink(), lambda: state.write_bytes(b"")):
        lose()
        for suffix in ("-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        summary, recorder = run()
        assert summary.done == ["rank-8", "rank-16"] and len(calls(project)) == before
        assert ("message", "rank-8: its output dir holds its finished results; recorded as done") in recorder.events
        assert adapter.stat().st_mtime_ns == stamp


def test_a_garbage_state_moved_away_as_its_message_says_retrains_nothing(project, runner, cli):
    experiment()
    run()
    before = len(calls(project))
    state = project / "experiments/exp/state.sqlite"
    state.write_bytes(b"not a database at all" * 100)
    line = one_error(runner.invoke(cli, ["run", "exp"]), "not a usable lfgen run state", "move it away")
    move = line.split("move it away (", 1)[1].split(")", 1)[0]
    subprocess.run(shlex.split(move), check=True)
    summary, _ = run()
    assert summary.done == ["rank-8", "rank-16"] and len(calls(project)) == before


def test_a_lost_state_does_not_take_an_edited_configs_results_for_its_own(project, runner, cli):
    experiment(runs=("8",))
    run()
    (project / "experiments/exp/state.sqlite").unlink()
    path = project / "experiments/exp/runs/rank-8.yaml"
    path.write_text(path.read_text().replace("learning_rate: ", "learning_rate: 3.0e-4  # was ", 1))
    one_error(runner.invoke(cli, ["run", "exp"]), "holds the finished results of another config", "--force")
    assert rows()["rank-8"].state == "pending"


# --- 4. no experiment replaced while a runner holds it ----------------------------------------------------


SWEEP = ["sweep", "rank", "8", "--model", "fake/model", "--gpu", "A800", "--name", "exp"]


def test_sweep_force_is_refused_while_the_experiment_trains(project, monkeypatch, runner, cli):
    experiment(runs=("8",))
    proc = live_run(project, monkeypatch, "exp")
    try:
        manifest = (project / "experiments/exp/experiment.yaml").read_bytes()
        one_error(runner.invoke(cli, [*SWEEP, "--force"]), "experiment experiments/exp is already being run by "
                                                           f"lfgen pid {proc.pid} (lfgen run, started")
        assert (project / "experiments/exp/experiment.yaml").read_bytes() == manifest
        assert (project / "experiments/exp/state.sqlite").is_file()
        one_error(runner.invoke(cli, ["run", "exp"]), "is already being run by")  # the lock still holds
    finally:
        stop(proc)
    result = runner.invoke(cli, [*SWEEP, "--force"])  # once it stopped, --force replaces it
    assert result.exit_code == 0, result.output
    assert not (project / "experiments/exp/state.sqlite").exists()


def test_two_sweeps_of_one_name_cannot_both_write_it(project, runner, cli):
    from lfgen.layout import experiment_lock

    with Lock(experiment_lock(project / "experiments/exp"), "experiment exp", holder="lfgen sweep"):
        one_error(runner.invoke(cli, SWEEP), "experiment experiments/exp is already being run by",
                  f"lfgen pid {os.getpid()} (lfgen sweep")
        assert not (project / "experiments/exp").exists()
    assert runner.invoke(cli, SWEEP).exit_code == 0
    one_error(runner.invoke(cli, SWEEP), "already exists")


def test_parallel_sweeps_of_one_name_one_wins(project):
    procs = [start_lfgen(*SWEEP) for _ in range(3)]
    codes = [proc.wait(timeout=120) for proc in procs]
    errors = [proc.stderr.read() for proc in procs]
    assert sorted(codes) == [0, 1, 1], errors
    assert all("Traceback" not in err for err in errors)
