"""The whole loop for real, on the CPU, offline: a tiny model built here, a 2-run sweep, `lfgen run`,
`lfgen status`, a second `lfgen run` that does nothing, `lfgen export`, `lfgen sample`, `lfgen chat`.

No stand-ins: real LlamaFactory trains, merges and generates (HF_HUB_OFFLINE=1, nothing downloaded).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import lfgen

from .conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project with a tiny model and dataset, and a finished 2-run rank sweep (trained once per module)."""
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    project = tmp_path_factory.mktemp("e2e")
    make_model(project / "tiny-model")
    make_dataset(project / "data")
    sets = [arg for key, value in CPU_SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    sweep = lfgen(project, "sweep", "rank", "4", "8", "--base", "lightweight", "--model", "./tiny-model",
                  "--dataset", "tiny_alpaca", "--dataset-dir", "data", "--name", "tiny", *sets)
    assert sweep.returncode == 0, sweep.stderr
    start = time.perf_counter()
    result = lfgen(project, "run", "tiny", "--quiet")
    elapsed = time.perf_counter() - start
    print(f"\nlfgen run of 2 tiny runs: {elapsed:.1f} s wall")
    assert result.returncode == 0, result.stderr[-3000:]
    return project, result


def test_every_run_trained_for_real(trained):
    project, result = trained
    assert "tiny: 2 done, 0 failed" in result.stderr
    for run in ("rank-4", "rank-8"):
        out = project / "outputs/tiny" / run
        for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl", "all_results.json",
                     "lfgen_run.yaml", "lfgen_train.log"):
            assert (out / name).is_file(), f"{run}: {name} missing"
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert adapter["r"] == int(run.split("-")[1]) and adapter["lora_alpha"] == 2 * adapter["r"]
        assert any((out / "runs").iterdir())  # TensorBoard events (report_to: tensorboard)
        records = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
        assert records[-1]["current_steps"] == 10


def test_the_measured_speed_of_a_real_run(trained):
    """lfgen.models.throughput reads what LlamaFactory really wrote (calibrate's and status's source)."""
    from lfgen.models.throughput import measured_throughput

    project, _ = trained
    found = measured_throughput(project / "outputs/tiny/rank-4")
    assert found.finished and found.steps == found.total_steps == 10
    assert found.runtime_s > 0 and found.step_s > 0 and found.samples_per_s > 0


def test_status_is_right(trained):
    project, _ = trained
    rows = json.loads(lfgen(project, "status", "tiny", "--json").stdout)
    assert [(r["run"], r["state"], r["step"], r["total"], r["attempts"]) for r in rows] == [
        ("rank-4", "done", 10, 10, 1), ("rank-8", "done", 10, 10, 1)]
    assert all(isinstance(r["loss"], float) and isinstance(r["eval_loss"], float) for r in rows)


def test_a_second_run_does_nothing(trained):
    project, _ = trained
    before = (project / "outputs/tiny/rank-4/adapter_model.safetensors").stat().st_mtime_ns
    result = lfgen(project, "run", "tiny", "--quiet")
    assert result.returncode == 0 and "started" not in result.stderr
    assert "tiny: 2 done, 0 failed" in result.stderr
    assert (project / "outputs/tiny/rank-4/adapter_model.safetensors").stat().st_mtime_ns == before


def test_export_merges_the_adapter(trained):
    project, _ = trained
    result = lfgen(project, "export", "outputs/tiny/rank-8")
    assert result.returncode == 0, result.stderr[-2000:]
    merged = project / "outputs/tiny/rank-8/merged"
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    again = lfgen(project, "export", "outputs/tiny/rank-8")
    assert again.returncode == 1 and "already exists and is not empty; pass --force" in again.stderr


def test_sample_answers_fixed_prompts(trained):
    project, _ = trained
    (project / "prompts.txt").write_text("what is 3 + 4?\n\ngive a short answer\n")
    result = lfgen(project, "sample", "outputs/tiny/rank-4", "--prompts", "prompts.txt", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in (project / "outputs/tiny/rank-4/samples.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == ["what is 3 + 4?", "give a short answer"]
    assert all(isinstance(line["response"], str) for line in lines)


def test_chat_ends_cleanly_at_end_of_input(trained):
    project, _ = trained
    result = lfgen(project, "chat", "outputs/tiny/rank-4", stdin="what is 3 + 4?\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "EOFError" not in result.stderr and "Traceback" not in result.stderr
    assert "Assistant:" in result.stdout
    # issue 21: LlamaFactory's INFO lines went to stdout, between the user's turns
    assert "[INFO" not in result.stdout and "llamafactory" not in result.stdout and "[INFO" in result.stderr


def test_a_config_llamafactory_rejects_is_recorded_as_failed_config(trained):
    project, _ = trained
    (project / "bad.yaml").write_text("model_name_or_path: ./tiny-model\nstage: sft\ndo_train: true\n"
                                      "finetuning_type: lora\nlora_rnk: 8\ndataset: tiny_alpaca\ndataset_dir: data\n"
                                      "template: qwen\noutput_dir: outputs/bad\nreport_to: none\n")
    result = lfgen(project, "run", "bad.yaml", "--quiet")
    assert result.returncode == 1 and "bad: 0 done, 1 failed" in result.stderr
    rows = json.loads(lfgen(project, "status", "bad.yaml", "--json").stdout)
    assert rows[0]["state"] == "failed" and rows[0]["reason"] == "config"
    assert "Some keys are not used by the HfArgumentParser: ['lora_rnk']" in rows[0]["detail"]


def test_tensorboard_serves_the_runs(trained):
    import socket
    import urllib.request

    project, _ = trained
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([sys.executable, "-m", "lfgen", "tensorboard", "outputs/tiny", "--port", str(port)],
                              cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # a group of its own: stopped whole if Ctrl-C does not stop it
    try:
        deadline = time.monotonic() + 90
        runs = None
        while time.monotonic() < deadline and runs is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as response:
                    runs = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert runs is not None, "TensorBoard did not answer"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not {r.split("/")[0] for r in runs} >= {"rank-4", "rank-8"}:
            time.sleep(1)  # TensorBoard loads event files in the background
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as response:
                runs = json.loads(response.read())
        assert {r.split("/")[0] for r in runs} >= {"rank-4", "rank-8"}, runs
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:  # Ctrl-C did not stop it (the test fails): stop it and its TensorBoard child
                os.killpg(server.pid, 9)
                server.wait()


def test_the_demo_names_a_real_winner_and_its_next_step_works_from_where_it_ran(tmp_path):
    """`lfgen demo demo` in tmp: the task is one the tiny model learns at the highest rate of the sweep, so the
    verdict names that run best beyond the noise, in compare's JSON too (issue 21's "one where a run clearly wins").
    Then, typed from tmp, the config the next step starts from, a sweep `--from demo/outputs/...`, `lfgen
    validate` of its runs (LlamaFactory's parser) and `lfgen run` of one of them, from yet another directory: the
    run config's recorded root says where LlamaFactory starts."""
    demo = lfgen(tmp_path, "demo", "demo", "--quiet")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert re.search(r"demo-lr: lr-1e-2 is best: final_eval_loss [\d.]+ ± [\d.]+ against .* beyond the noise",
                     demo.stdout), demo.stdout[-3000:]
    rows = {row["run"]: row for row in json.loads(lfgen(tmp_path, "compare", "demo/outputs/demo-lr", "--format",
                                                        "json").stdout)}
    assert rows["lr-1e-2"]["verdict"] == "best" and rows["lr-1e-5"]["verdict"].startswith("not ranked: not-learning")
    assert rows["lr-1e-2"]["final_eval_loss"] < rows["lr-1e-3"]["final_eval_loss"] < rows["lr-1e-5"]["final_eval_loss"]
    step = re.search(r"start from (demo/outputs/demo-lr/lr-1e-2/lfgen_run\.yaml)", demo.stdout)  # lr is a full
    assert step and (tmp_path / step.group(1)).is_file(), demo.stdout[-2000:]  # fine-tune's only axis: combine
    args = ["sweep", "epochs", "1", "--from", "demo/outputs/demo-lr"]
    sweep = lfgen(tmp_path, *args)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = sorted((tmp_path / "experiments").glob("*/runs/*.yaml"))
    assert runs, sweep.stderr
    config = yaml.safe_load(runs[0].read_text())
    assert (config["model_name_or_path"], config["dataset_dir"]) == ("./demo/tiny-model", "./demo/data")
    assert config["learning_rate"] == 0.01  # from the best run
    assert not config["output_dir"].startswith("demo/")  # the new runs write under the new experiment
    report = lfgen(tmp_path, "validate", "--json", *(str(p.relative_to(tmp_path)) for p in runs))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-2000:]
    assert json.loads(report.stdout)["llamafactory"]["parser_run"] is True
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = lfgen(elsewhere, "run", str(runs[0]), "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / config["output_dir"]
    assert (out / "model.safetensors").is_file() and (out / "all_results.json").is_file()
