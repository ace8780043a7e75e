"""An experiment's GPU-hours and cost before it runs (lfgen/experiments/costs.py): lfgen sweep --dry-run and lfgen
tune --dry-run show the total first, per run and with the range, and write nothing."""

from __future__ import annotations

import pytest

from lfgen.builder.options import BuildOptions
from lfgen.builder.timing import estimate_config_time
from lfgen.catalogs.gpus import find_gpu
from lfgen.experiments.make import make_sweep

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
ARGS = ["--base", "lightweight", "--model", MODEL, "--gpu", "A100-80", "--samples", "20000"]


@pytest.fixture(autouse=True)
def _project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_a_sweeps_total_is_the_sum_of_its_runs_explain_estimates(tmp_path):
    preview = make_sweep("rank", ["8", "64"], base="lightweight", dry_run=True, price=2.0,
                         options=BuildOptions.parse(model=MODEL, gpu="A100-80", samples=20000))
    assert not (tmp_path / "experiments").exists()  # a dry run writes nothing
    plan = preview.cost
    assert [name for name, _ in plan.runs] == ["rank-8", "rank-64"] and plan.device == "A100-80"
    for _, cost in plan.runs:
        assert cost.cost["usd_per_gpu_hour"] == 2.0 and cost.cost["price_source"] == "--price"
    again = [estimate_config_time(MODEL, built.config, find_gpu("A100-80"), 1, built.samples, built.lengths, 2.0)
             for built in _builds()]
    assert plan.gpu_hours == pytest.approx(sum(c.gpu_hours for c in again))
    assert plan.low_gpu_hours < plan.gpu_hours < plan.high_gpu_hours
    assert plan.usd == pytest.approx(sum(c.cost["usd"] for c in again))


def _builds():
    from lfgen import build

    return [build("lightweight", BuildOptions.parse(model=MODEL, gpu="A100-80", samples=20000, rank=rank))
            for rank in (8, 64)]


def test_sweep_dry_run_prints_the_total_first(tmp_path, runner, cli):
    result = runner.invoke(cli, ["sweep", "rank", "8", "64", *ARGS, "--dry-run"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("estimate: 2 run(s) on A100-80: ~") and "GPU-hours (range" in first and "$" in first
    assert "GPU-h" in result.stdout and "cost" in result.stdout
    assert "nothing written" in result.stderr and not (tmp_path / "experiments").exists()


def test_without_a_gpu_the_runs_are_timed_on_this_machine(tmp_path, runner, cli, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: this machine is its CPU
    result = runner.invoke(cli, ["sweep", "rank", "8", "--base", "lightweight", "--model", MODEL, "--samples", "200",
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "this machine's CPU" in result.stdout and "no default price for CPU" in result.stdout


def test_tune_dry_run_estimates_each_trial_and_the_budgets_room(tmp_path, runner, cli):
    pytest.importorskip("optuna")
    result = runner.invoke(cli, ["tune", "t", *ARGS, "--trials", "12", "--budget", "10", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("estimate: 12 trial(s), each estimated as the base (pruning can only lower it) on "
                               "A100-80: ~")
    room = next(line for line in lines if line.startswith("budget: 10 GPU-hours: room for about"))
    assert "never starts a trial it cannot afford" in room
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("price", ["-1", "0", "nan", "inf", "1000"])
def test_a_bad_price_is_one_line_before_anything(tmp_path, runner, cli, price):
    result = runner.invoke(cli, ["sweep", "rank", *ARGS, "--dry-run", "--price", price])
    assert result.exit_code == 1 and result.stderr.startswith("Error: --price: must be a price") and \
        len(result.stderr.strip().splitlines()) == 1
    written = runner.invoke(cli, ["sweep", "rank", *ARGS, "--price", price])  # not a dry run: refused all the same
    assert written.exit_code == 1 and "--price" in written.stderr and not (tmp_path / "experiments").exists()
