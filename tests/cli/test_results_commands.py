"""lfgen compare / report / tensorboard from the command line, on run directories written in LlamaFactory's
formats (tests/results/lf_files.py); the real-training path is covered by tests/test_e2e.py and lfgen demo."""

from __future__ import annotations

import json

import pytest

from ..results.lf_files import Curves, decay, evals_at, write_run


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs" / "rank-sweep"
    for rank, end in ((16, 1.3), (32, 1.1), (64, 1.2)):
        steps = 40
        write_run(root / f"rank-{rank}", Curves(loss=decay(steps, end=end), logging_steps=5,
                                                eval=evals_at([50, 100, 150, 200], lambda s: end + 0.1 + 20 / s)),
                  config={"lora_rank": rank, "lora_alpha": 2 * rank}, vram=True)
    return tmp_path / "outputs"


def test_compare_table_names_the_best_run_and_the_next_step(runner, cli, outputs):
    result = runner.invoke(cli, ["compare", str(outputs), "--sort", "best_eval_loss"])
    assert result.exit_code == 0, result.stderr
    body = result.stdout
    assert body.index("rank-32") < body.index("rank-64") < body.index("rank-16")
    assert "rank-sweep: best rank-sweep/rank-32 (final_eval_loss)" in result.stderr
    assert f"lfgen sweep alpha --from {outputs / 'rank-sweep'}" in result.stderr


@pytest.mark.parametrize("fmt,check", [
    ("csv", lambda text: text.splitlines()[0].startswith("run,")),
    ("json", lambda text: {row["lora_rank"] for row in json.loads(text)} == {16, 32, 64}),
    ("markdown", lambda text: text.lstrip().startswith("| run")),
    ("html", lambda text: "<table" in text and "rank-32" in text),
])
def test_formats(runner, cli, outputs, fmt, check):
    result = runner.invoke(cli, ["compare", str(outputs), "--format", fmt])
    assert result.exit_code == 0, result.stderr
    assert check(result.stdout)


def test_output_file_plot_and_no_clobber(runner, cli, outputs, tmp_path):
    target, png = tmp_path / "runs.csv", tmp_path / "curves.png"
    result = runner.invoke(cli, ["compare", str(outputs), "--format", "csv", "-o", str(target), "--plot", str(png)])
    assert result.exit_code == 0, result.stderr
    assert target.read_text().startswith("run,") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = runner.invoke(cli, ["compare", str(outputs), "--format", "csv", "-o", str(target)])
    assert again.exit_code == 1 and "already exists; pass --force" in again.stderr


def test_filter(runner, cli, outputs):
    result = runner.invoke(cli, ["compare", str(outputs), "--format", "json", "--filter", "lora_rank>=32"])
    assert {row["lora_rank"] for row in json.loads(result.stdout)} == {32, 64}


def test_report_is_written_once(runner, cli, outputs, tmp_path):
    target = tmp_path / "report.html"
    assert runner.invoke(cli, ["report", str(outputs), "-o", str(target)]).exit_code == 0
    html = target.read_text()
    assert "rank-32" in html and "data:image/png;base64," in html
    again = runner.invoke(cli, ["report", str(outputs), "-o", str(target)])
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_no_runs_is_a_clear_error(runner, cli, tmp_path):
    result = runner.invoke(cli, ["compare", str(tmp_path)])
    assert result.exit_code == 1 and "no run directories found" in result.stderr and "Traceback" not in result.output


def test_tensorboard_command_line(outputs):
    from lfgen.runs.discover import tensorboard_dirs
    from lfgen.launch import tensorboard_argv

    for run in ("rank-16", "rank-32"):
        (outputs / "rank-sweep" / run / "runs" / "Nov23_01-00-00_host").mkdir(parents=True)
    argv = tensorboard_argv(tensorboard_dirs(outputs), port=6010)
    assert argv[0].endswith("tensorboard") and argv[1] == "--logdir_spec" and argv[3:] == ["--port", "6010",
                                                                                           "--host", "127.0.0.1"]
    spec = dict(item.split(":", 1) for item in argv[2].split(","))
    assert set(spec) == {"rank-sweep/rank-16", "rank-sweep/rank-32"}  # rank-64 has no TensorBoard logs
    assert all(path.endswith("/runs") for path in spec.values())


def test_existing_plot_is_kept_without_force(runner, cli, outputs, tmp_path):
    png = tmp_path / "curves.png"
    png.write_bytes(b"mine")
    result = runner.invoke(cli, ["compare", str(outputs), "--plot", str(png)])
    assert result.exit_code == 1 and f"Error: --plot: {png} already exists; pass --force to overwrite it" in result.stderr
    assert png.read_bytes() == b"mine"
    assert runner.invoke(cli, ["compare", str(outputs), "--plot", str(png), "--force"]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("condition,message", [
    ("lora_rank > abc", "filter 'lora_rank > abc': > compares numbers and 'abc' is not one"),
    ("lora_rank", "filter 'lora_rank': write COLUMN OP VALUE"),
    ("lora_rnk>=8", "filter 'lora_rnk>=8': no column or config key 'lora_rnk' (did you mean: lora_rank"),
])
@pytest.mark.parametrize("command", ["compare", "report"])
def test_a_malformed_filter_is_a_usage_error(runner, cli, outputs, tmp_path, command, condition, message):
    extra = ["-o", str(tmp_path / "report.html")] if command == "report" else []
    result = runner.invoke(cli, [command, str(outputs), "--filter", condition, *extra])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: Invalid value for '--filter': ") and message in line
    assert not (tmp_path / "report.html").exists()


def test_environment_columns_in_json_and_csv(runner, cli, outputs):
    env = {"lfgen": "0.1.0", "llamafactory": "0.9.5", "transformers": "4.57.1", "peft": "0.17.1", "torch": "2.8.0",
           "python": "3.11.7", "gpus": [], "device": "cpu", "command": ["lfgen", "run", "x"], "started": "2026-12-01"}
    for run in ("rank-16", "rank-32", "rank-64"):
        (outputs / "rank-sweep" / run / "lfgen_env.json").write_text(json.dumps(env))
    rows = json.loads(runner.invoke(cli, ["compare", str(outputs), "--format", "json"]).stdout)
    assert {(row["device"], row["llamafactory_version"]) for row in rows} == {("cpu", "0.9.5")}
    header = runner.invoke(cli, ["compare", str(outputs), "--format", "csv"]).stdout.splitlines()[0]
    assert header.endswith(",device,llamafactory_version")


def test_compare_of_an_experiment_folder(runner, cli, tmp_path, monkeypatch):
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments.make import make_sweep

    monkeypatch.chdir(tmp_path)
    make_sweep("rank", ["8", "16"], options=BuildOptions.parse(model="fake/model", gpu="A800"), name="exp")
    result = runner.invoke(cli, ["compare", "experiments/exp", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert [(row["run"], row["state"], row["lora_rank"]) for row in json.loads(result.stdout)] == [
        ("rank-8", "pending", 8), ("rank-16", "pending", 16)]
    assert "exp: no run has logged a loss yet" in result.stderr and "best None" not in result.stderr
