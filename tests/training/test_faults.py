"""lfgen run's fault handling, with a stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py).

A CPU run cannot produce CUDA OOM or a NaN loss on demand, and kill/Ctrl-C tests need runs whose
timing the test controls; these tests simulate those faults with the stand-in, and a fake
`nvidia-smi` for GPU scheduling. Everything else is covered by the real end-to-end test
(tests/test_e2e.py), which trains, exports and samples with real LlamaFactory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from lfgen.errors import InputError
from lfgen.training.overview import status
from lfgen.training.target import resolve
from lfgen.runs.store import Store

from tests.helpers import alive, calls, experiment, fake_gpus, modes, rows, run, running, start_lfgen, wait_for


def test_runs_in_order_and_a_second_run_does_nothing(project, monkeypatch):
    experiment()
    summary, _ = run()
    assert summary.done == ["rank-8", "rank-16"] and summary.failed == []
    assert [c["argv"][1:] for c in calls(project) if "finished" not in c] == [
        ["train", "outputs/exp/rank-8/lfgen_run.yaml"], ["train", "outputs/exp/rank-16/lfgen_run.yaml"]]
    assert all(c["env"]["RECORD_VRAM"] == "1" for c in calls(project))
    before = len(calls(project))
    summary, recorder = run()
    assert summary.done == ["rank-8", "rank-16"] and len(calls(project)) == before
    assert not [e for e in recorder.events if e[0] == "started"]


def test_oom_retry_halves_the_micro_batch_and_keeps_the_effective_batch(project, monkeypatch):
    experiment(runs=("8",))  # A800: micro-batch 8 x accumulation 4 = 32
    modes(monkeypatch, rank_8="oom-above:2")
    summary, recorder = run()
    assert summary.done == ["rank-8"]
    attempts = [(c["micro"], c["accum"]) for c in calls(project) if "finished" not in c]
    assert attempts == [(8, 4), (4, 8), (2, 16)]
    assert {micro * accum for micro, accum in attempts} == {32}
    row = rows()["rank-8"]
    assert (row.state, row.oom_retries, row.attempts) == ("done", 2, 3)
    used = yaml.safe_load((project / "outputs/exp/rank-8/lfgen_run.yaml").read_text())
    assert (used["per_device_train_batch_size"], used["gradient_accumulation_steps"]) == (2, 16)
    retries = [e for e in Store(resolve("exp").state_path).events("rank-8") if e[2] == "oom-retry"]
    assert [r[3].split("; ")[-1] for r in retries] == [
        "micro-batch 8 x accumulation 4 -> 4 x 8 (effective batch kept)",
        "micro-batch 4 x accumulation 8 -> 2 x 16 (effective batch kept)"]


def test_oom_gives_up_at_micro_batch_1_with_advice(project, monkeypatch):
    experiment(runs=("8",), gpu="RTX 4090")  # 2 x 16
    modes(monkeypatch, rank_8="oom")
    summary, _ = run()
    row = rows()["rank-8"]
    assert summary.failed == ["rank-8"] and (row.state, row.reason) == ("failed", "oom")
    assert "at micro-batch 1" in row.detail and "quantization_bit 4" in row.detail
    assert [(c["micro"], c["accum"]) for c in calls(project)] == [(2, 16), (1, 32)]


def test_oom_retries_are_capped(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="oom")
    run(max_oom_retries=1)
    assert "after 1 OOM retries" in rows()["rank-8"].detail


def test_nan_run_is_stopped_within_one_log_step(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="nan-at:3")
    summary, _ = run()
    row = rows()["rank-8"]
    assert (row.state, row.reason) == ("failed", "nan") and "R-DIAG-NAN" in row.detail
    steps = [json.loads(line)["current_steps"] for line in
             (project / "outputs/exp/rank-8/trainer_log.jsonl").read_text().splitlines()]
    assert max(steps) <= 4  # NaN at step 3, a log step every 0.3 s: stopped before step 5
    assert summary.done == ["rank-16"]  # the experiment goes on


def test_loss_zero_with_grad_norm_nan_is_caught(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="zero-gradnan-at:2")
    run()
    row = rows()["rank-8"]
    assert (row.state, row.reason) == ("failed", "nan") and "grad_norm NaN" in row.detail


def test_crash_is_recorded_with_the_last_log_lines_and_the_experiment_goes_on(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="crash")
    summary, _ = run()
    row = rows()["rank-8"]
    assert (row.state, row.reason) == ("failed", "crashed") and "NCCL error" in row.detail
    assert summary.done == ["rank-16"]


def test_fail_fast_stops_at_the_first_failure(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="crash")
    summary, _ = run(fail_fast=True)
    assert summary.failed == ["rank-8"] and rows()["rank-16"].state == "pending"


def test_config_failure_is_classified(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="config")
    run()
    row = rows()["rank-8"]
    assert (row.reason, row.state) == ("config", "failed") and "Some keys are not used" in row.detail


def test_retry_failed_and_rerun(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_8="crash")
    run()
    modes(monkeypatch)
    summary, _ = run()  # failed runs are not retried by default
    assert summary.failed == ["rank-8"]
    summary, _ = run(retry_failed=True)
    assert summary.done == ["rank-8", "rank-16"]
    count = len(calls(project))
    run(rerun=["rank-16"])
    assert len(calls(project)) == count + 2 and rows()["rank-16"].attempts == 2  # started + finished lines


def test_kill_9_then_resume_loses_no_finished_run(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_16="slow:0.2")
    lfgen = start_lfgen(project, "exp")
    wait_for(lambda: any(c["mode"].startswith("slow") for c in calls(project)))
    child = next(c for c in calls(project) if c["mode"].startswith("slow"))["pid"]
    lfgen.send_signal(signal.SIGKILL)
    lfgen.wait()
    wait_for(lambda: not alive(child), timeout=10)  # the run dies with lfgen (PR_SET_PDEATHSIG)
    assert rows()["rank-8"].state == "done" and rows()["rank-16"].state == "running"
    modes(monkeypatch)
    summary, recorder = run()
    assert summary.done == ["rank-8", "rank-16"]
    assert rows()["rank-8"].attempts == 1  # the finished run was not run again
    assert any("its last runner" in e[1] for e in recorder.events if e[0] == "message")


def test_ctrl_c_stops_the_run_records_interrupted_and_exits_130(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="slow:0.2")
    lfgen = start_lfgen(project, "exp")
    wait_for(lambda: calls(project) and running("rank-8"), what="rank-8 recorded running")
    child = calls(project)[0]["pid"]
    lfgen.send_signal(signal.SIGINT)
    _, err = lfgen.communicate(timeout=30)
    assert lfgen.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not alive(child)
    assert (rows()["rank-8"].state, rows()["rank-8"].detail) == ("interrupted", "stopped with Ctrl-C")


def test_a_second_runner_is_refused_naming_the_first(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="slow:0.2")
    first = start_lfgen(project, "exp")
    try:
        wait_for(lambda: calls(project))
        second = subprocess.run([sys.executable, "-m", "lfgen", "run", "exp"], cwd=project, capture_output=True,
                                text=True, env=dict(os.environ))
        assert second.returncode == 1
        assert f"Error: experiment exp is already being run by lfgen pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def test_gpus_are_shared_one_run_per_gpu(project, monkeypatch):
    fake_gpus(project, 2)
    experiment(runs=("4", "8", "16", "32"))
    modes(monkeypatch, rank_4="slow:0.05", rank_8="slow:0.05", rank_16="slow:0.05", rank_32="slow:0.05")
    from lfgen import launch

    summary, _ = run(gpus=launch.parse_gpus("0,1", launch.visible_gpus()))
    assert len(summary.done) == 4
    starts = [c for c in calls(project) if "finished" not in c]
    ends = {c["pid"]: c["end"] for c in calls(project) if "finished" in c}
    assert {c["env"]["CUDA_VISIBLE_DEVICES"] for c in starts} == {"0", "1"}
    for moment in (c["start"] for c in starts):  # never more than two at once, never two on one GPU
        live = [c for c in starts if c["start"] <= moment < ends[c["pid"]]]
        assert len(live) <= 2 and len({c["env"]["CUDA_VISIBLE_DEVICES"] for c in live}) == len(live)


def test_dry_run_shows_the_gpu_plan_and_starts_nothing(project, monkeypatch):
    fake_gpus(project, 4)
    experiment(runs=("8", "16", "32"))
    from lfgen import launch

    _, recorder = run(gpus=launch.parse_gpus("0-3", launch.visible_gpus()), gpus_per_run=2, dry_run=True)
    text = "\n".join(recorder.events[0][1])
    assert "2 at a time" in text
    assert "CUDA_VISIBLE_DEVICES=0,1 FORCE_TORCHRUN=1 NPROC_PER_NODE=2 RECORD_VRAM=1" in text
    assert "CUDA_VISIBLE_DEVICES=2,3" in text and calls(project) == []


def test_status_table(project, monkeypatch):
    experiment(runs=("8", "16"))
    modes(monkeypatch, rank_16="crash")
    run()
    table = {row["run"]: row for row in status(resolve("exp"))}
    assert (table["rank-8"]["state"], table["rank-8"]["step"], table["rank-8"]["total"]) == ("done", 5, 5)
    assert table["rank-8"]["loss"] == pytest.approx(0.4)
    assert (table["rank-16"]["state"], table["rank-16"]["reason"], table["rank-16"]["step"]) == ("failed", "crashed", 3)


@pytest.mark.parametrize("args,message", [
    (["run", "nope"], "Error: nope: no such experiment or config file; experiments: exp"),
    (["run", "exp", "--gpus", "7"], "Error: --gpus: GPU 7 does not exist; visible GPUs: 0, 1"),
    (["run", "exp", "--gpus", "0,1", "--gpus-per-run", "3"],
     "Error: --gpus-per-run: 3 is more than the 2 GPU(s) given with --gpus"),
    (["run", "exp", "--gpus", "zero"], "Error: --gpus: 'zero' is not a GPU list; write 0,1,2,3 or 0-7"),
    (["export", "outputs/exp/rank-8"], "the run is not done (no trained adapter in it)"),
    (["status", "nope"], "Error: nope: no such experiment or config file"),
])
def test_bad_input(project, runner, cli, args, message):
    fake_gpus(project, 2)
    experiment(runs=("8",))
    (project / "outputs/exp/rank-8").mkdir(parents=True)
    (project / "outputs/exp/rank-8/lfgen_run.yaml").write_text("model_name_or_path: m\n")
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


def test_llamafactory_cli_not_installed(project, monkeypatch, tmp_path):
    from lfgen import launch

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(launch.sys, "executable", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(InputError, match=r"llamafactory-cli is not installed; install it with pip install 'lfgen\[train\]'"):
        launch.find_cli()


def test_an_output_dir_lfgen_did_not_make_is_not_touched(project, monkeypatch):
    experiment(runs=("8",))
    foreign = project / "outputs/exp/rank-8"
    foreign.mkdir(parents=True)
    (foreign / "adapter_model.safetensors").write_bytes(b"someone else's")
    summary, _ = run()
    assert summary.failed == ["rank-8"] and rows()["rank-8"].reason == "config"
    assert (foreign / "adapter_model.safetensors").read_bytes() == b"someone else's" and calls(project) == []


def test_argv_and_env_are_pure_functions():
    from lfgen import launch

    assert launch.train_argv("/bin/lf", "o/r/lfgen_run.yaml") == ["/bin/lf", "train", "o/r/lfgen_run.yaml"]
    env = launch.train_env({"PATH": "/bin", "FORCE_TORCHRUN": "1"}, [3])
    assert env == {"PATH": "/bin", "RECORD_VRAM": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "3"}
    assert launch.train_env({}, [0, 1])["FORCE_TORCHRUN"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in launch.train_env({}, None)


def test_rich_progress_bars_show_step_loss_and_the_experiment(project, monkeypatch):
    import io

    from rich.console import Console

    from lfgen.cli.progress import RichReporter
    from lfgen.training.watch import Progress

    reporter = RichReporter(total_runs=2, console=Console(file=io.StringIO(), force_terminal=True, width=120))
    with reporter:
        reporter.started("rank-8", 1, None, "")
        reporter.progress("rank-8", Progress(step=5, total=10, loss=1.25, eval_loss=1.5))
        reporter.bars.refresh()
        shown = reporter.bars.console.file.getvalue()
        reporter.finished("rank-8", "done", None, None)
    assert "rank-8" in shown and "5/10" in shown and "loss 1.25" in shown and "eval 1.5" in shown
    overall = reporter.bars.tasks[0]
    assert (overall.description, overall.completed, overall.total) == ("[bold]experiment", 1, 2)


def test_a_run_recorded_done_as_ctrl_c_lands_keeps_its_outcome(project, monkeypatch):
    """Ctrl-C between a run's end being recorded and the runner letting go of it: the run stays done (it was
    recorded interrupted before, and its resume trained it again)."""
    from lfgen.runs.states import RunState
    from lfgen.training import runner as runners

    experiment(runs=("8",))
    real = runners.Runner._check

    def check_then_ctrl_c(self, name):
        ended = real(self, name)
        if ended and self.store.get(name).state is RunState.DONE:
            raise KeyboardInterrupt
        return ended

    monkeypatch.setattr(runners.Runner, "_check", check_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert rows()["rank-8"].state == "done"
