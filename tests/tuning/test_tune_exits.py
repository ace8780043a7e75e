"""How lfgen tune ends, with the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) ONLY to make
every trial crash at will: a study with no best trial exits 1 after its table; a trial whose run never started is
told failed, never left RUNNING; a resume at the highest seed; the grid's points taken one by one, never listed; the
loser of two new tunes of one name is told what tune offers."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from lfgen.runs.study import load_rows
from tests.helpers import calls, modes

pytest.importorskip("optuna")

BASE = ["--base", "a800", "--model", "fake/model", "--gpu", "A800"]
SPACE = "lora_rank: {choices: [8, 16, 32]}\n"


def _space(project: Path, text: str = SPACE) -> str:
    (project / "space.yaml").write_text(text)
    return "space.yaml"


def test_a_study_whose_every_trial_failed_exits_1_after_its_table(project, monkeypatch, runner, cli):
    """Exit 0 before, with "no trial completed ... nothing is best" said as if nothing were wrong."""
    modes(monkeypatch, trial="crash")
    result = runner.invoke(cli, ["tune", "t", *BASE, "--space", _space(project), "--trials", "2", "--pruner", "none"])
    assert result.exit_code == 1, result.output
    assert "trial-001" in result.stdout  # the table first: which trials ran and why each failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no trial completed with a finite eval_loss (2 failed)" in errors[0], result.stderr
    assert "crashed" in errors[0] and "lfgen tune t --trials 4 tries more" in errors[0]
    assert [row["state"] for row in load_rows(project / "experiments/t")] == ["failed", "failed"]
    assert not (project / "experiments/t/best.yaml").exists()


def test_a_trial_whose_run_cannot_start_is_told_failed_not_left_running(project, runner, cli):
    """outputs/t is a file: no lock file can be made beside a trial's output dir. Each trial stayed RUNNING in the
    study (and pending in the state) and lfgen tune exited 0."""
    (project / "outputs").mkdir()
    (project / "outputs/t").write_text("a file where the study's runs go\n")
    result = runner.invoke(cli, ["tune", "t", *BASE, "--space", _space(project), "--trials", "3"])
    assert result.exit_code == 1, result.output
    rows = load_rows(project / "experiments/t")
    assert [row["state"] for row in rows] == ["failed"], rows  # the study stops: no parameter changes this
    assert rows[0]["why"].startswith("config: could not prepare outputs/t/trial-000") and "File exists" in rows[0]["why"]
    assert "the study stops" in result.stderr and calls(project) == []


def test_the_highest_seed_resumes(project, runner, cli):
    """The sampler's seed is --seed plus the trials so far: 4294967295 + 1 overflowed numpy's seed on every resume."""
    first = runner.invoke(cli, ["tune", "t", *BASE, "--space", _space(project), "--trials", "1", "--seed", "4294967295"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli, ["tune", "t", "--trials", "3"])
    assert again.exit_code == 0, again.output
    assert [row["state"] for row in load_rows(project / "experiments/t")] == ["complete"] * 3


def test_a_folder_in_the_way_of_a_new_tune_names_what_tune_offers(project, runner, cli):
    """The loser of two new tunes of one name (the other set the study up between its look and its write) was told
    to pass --force or --name, which tune does not have."""
    (project / "experiments/t").mkdir(parents=True)
    result = runner.invoke(cli, ["tune", "t", *BASE, "--space", _space(project), "--trials", "1"])
    assert result.exit_code == 1, result.output
    error = result.stderr.strip()
    assert "lfgen tune t resumes a study, or tune under a new name" in error, error
    assert "--force" not in error and "--name" not in error
    assert list((project / "experiments/t").iterdir()) == []


def test_a_grid_of_3_2_million_points_is_walked_in_order_never_listed(project):
    """20 values of each of five keys: the grid used to be listed whole (3.2M points, MemoryError after the experiment
    was written, or all the memory without a limit; under this limit it failed up to 800 MiB, and takes 300 MiB now).
    Under a 600 MiB address-space limit the study takes its first three points, in order."""
    values = {"lora_rank": list(range(8, 28)), "lora_alpha": list(range(8, 28)), "lora_dropout": [i / 100 for i in range(20)],
              "learning_rate": [round(1e-4 * (i + 1), 6) for i in range(20)], "seed": list(range(20))}
    _space(project, "".join(f"{key}: {{choices: {json.dumps(choices)}}}\n" for key, choices in values.items()))
    limit = 600 * 2**20
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no per-core thread stacks

    def cap():  # in the child only: the test's own process keeps its memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "lfgen", "tune", "g", *BASE, "--space", "space.yaml", "--sampler",
                           "grid", "--trials", "3", "--pruner", "none"], cwd=project, capture_output=True, text=True,
                          timeout=300, preexec_fn=cap, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = load_rows(project / "experiments/g")
    assert [row["params"] for row in rows] == [
        {"lora_rank": 8, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 1e-4, "seed": seed} for seed in range(3)]
