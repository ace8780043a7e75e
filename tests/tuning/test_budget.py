"""lfgen tune --budget (lfgen/tuning/budget.py): bad budgets are one line before anything is written; the gate's
arithmetic on a state the test records (spent measured from the event log, the running trials' commitment, this
study's measured ratio). The budget stopping a real study is tests/tuning/test_tune_budget_e2e.py."""

from __future__ import annotations

import json
import os
import struct
import time

import pytest

from lfgen.errors import InputError
from lfgen.runs.states import RunState
from lfgen.runs.store import Store
from lfgen.tuning.budget import MAX_GPU_HOURS, STOP_MARGIN_S, Gate, TrialCost, check_budget

ARGS = ["--base", "lightweight", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "A100-80", "--samples", "400"]


@pytest.mark.parametrize("value", [-1.0, 0, 0.0, float("nan"), float("inf"), MAX_GPU_HOURS * 10, True, "24"])
def test_a_budget_must_be_gpu_hours_above_zero_and_not_absurd(value):
    with pytest.raises(InputError, match=r"^--budget: must be GPU-hours above 0"):
        check_budget(value)
    assert check_budget(24) == 24.0 and check_budget(MAX_GPU_HOURS) == MAX_GPU_HOURS


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "1e9"])
def test_the_cli_refuses_a_bad_budget_before_anything_is_written(tmp_path, runner, cli, monkeypatch, value):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["tune", "t", *ARGS, "--budget", value])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: --budget: must be GPU-hours above 0") and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "experiments").exists()


def test_a_budget_needs_an_estimate_and_staged_has_none(tmp_path, runner, cli, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    unknown = runner.invoke(cli, ["tune", "t", "--base", "lightweight", "--model", "fake/model", "--budget", "2"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error: --budget: lfgen cannot estimate a trial's time")
    staged = runner.invoke(cli, ["tune", "t", *ARGS, "--staged", "--budget", "2"])
    assert staged.exit_code == 1 and "--budget: not with --staged" in staged.stderr
    assert not (tmp_path / "experiments").exists()
    price = runner.invoke(cli, ["tune", "t", *ARGS, "--budget", "2", "--price", "-3"])
    assert price.exit_code == 1 and price.stderr.startswith("Error: --price: must be a price")


def _state(tmp_path, now):
    """trial-000 done in 150 s; trial-001 running for 50 s (this test's own process group: alive)."""
    store = Store(tmp_path / "state.sqlite")
    store.sync_runs([("trial-000", "runs/trial-000.yaml", "out/0"), ("trial-001", "runs/trial-001.yaml", "out/1")])
    store.db.execute("INSERT INTO events (run, time, kind, message) VALUES ('trial-000', ?, 'started', '')",
                     (now - 400,))
    store.db.execute("INSERT INTO events (run, time, kind, message) VALUES ('trial-000', ?, 'done', '')",
                     (now - 250,))
    store.db.execute("INSERT INTO events (run, time, kind, message) VALUES ('trial-001', ?, 'started', '')",
                     (now - 50,))
    store.transition("trial-001", RunState.RUNNING, pgid=os.getpgrp())  # no event: the one above is its start
    store.close()
    runs = [(name, tmp_path / f"runs/{name}.yaml", out) for name, out in (("trial-000", "out/0"), ("trial-001", "out/1"))]
    return runs


def _gate(tmp_path, hours):
    gate = Gate(hours, tmp_path, tmp_path / "state.sqlite")
    gate.estimates = {"trial-000": TrialCost(100.0, 124.0, 1), "trial-001": TrialCost(100.0, 124.0, 1)}
    return gate


def test_the_next_trial_fits_beside_what_is_spent_and_what_the_running_trial_still_needs(tmp_path):
    now = time.time()
    runs = _state(tmp_path, now)
    gate = _gate(tmp_path, 1.0)
    new = TrialCost(100.0, 124.0, 1)
    # spent: 150 s (trial-000) + ~50 s (trial-001, running); trial-000 took 1.5 x its estimate: the running trial
    # still needs 124 x 1.5 - 50 = 136 s, the new one 124 x 1.5 = 186 s, each with the 10 s kept for stopping it
    # (STOP_MARGIN_S, what spent_out keeps): 542 s in all
    m = STOP_MARGIN_S
    ok, figures = gate.affordable(new, runs, {"trial-001"}, {"trial-000"})
    assert figures["study_ratio"] == pytest.approx(1.5) and figures["measured_trials"] == 1
    assert figures["spent_gpu_hours"] * 3600 == pytest.approx(200.0, abs=3.0)
    assert figures["running_gpu_hours"] * 3600 == pytest.approx(136.0 + m, abs=3.0)
    assert figures["next_gpu_hours"] * 3600 == pytest.approx(186.0 + m, abs=0.1)
    assert ok
    # 542 s in all (a few more while the test runs): 530 s of budget cannot afford it, 580 s can; without the stop
    # margins (522 s) a trial admitted at 530 s would be stopped by spent_out before its estimate ends
    assert not _gate(tmp_path, 530 / 3600).affordable(new, runs, {"trial-001"}, {"trial-000"})[0]
    assert _gate(tmp_path, 580 / 3600).affordable(new, runs, {"trial-001"}, {"trial-000"})[0]
    # a trial to resume needs what its newest whole checkpoint does not save: without one, all of its 186 s again
    # (what it ran is spent for nothing); from step 3 of 4, a quarter
    _, resumed = _gate(tmp_path, 1.0).affordable(new, runs, set(), {"trial-000"}, "trial-001")
    assert resumed["next_gpu_hours"] * 3600 == pytest.approx(186.0 + m, abs=0.1)
    checkpoint = tmp_path / "out/1/checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3, "max_steps": 4}))
    (checkpoint / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # whole: empty header
    _, resumed = _gate(tmp_path, 1.0).affordable(new, runs, set(), {"trial-000"}, "trial-001")
    assert resumed["next_gpu_hours"] * 3600 == pytest.approx(186.0 / 4 + m, abs=0.1)
    # ... and its start-up again, whole: 20 s of start-up and a quarter of the other 104 s, x 1.5
    gate = _gate(tmp_path, 1.0)
    gate.estimates["trial-001"] = TrialCost(100.0, 124.0, 1, startup_s=20.0)
    _, resumed = gate.affordable(gate.estimates["trial-001"], runs, set(), {"trial-000"}, "trial-001")
    assert resumed["next_gpu_hours"] * 3600 == pytest.approx((20.0 + 104.0 / 4) * 1.5 + m, abs=0.1)


def test_a_resumed_trial_running_still_needs_what_it_resumed_with_less_what_it_ran_since(tmp_path):
    # trial-001 was admitted (no checkpoint) when it had run 40 s in an earlier attempt: of its 124 x 1.5 = 186 s
    # it has run 10 s since, so 176 s are still committed (not 186 - 50: the lost attempt is not progress)
    runs = _state(tmp_path, time.time())
    gate = _gate(tmp_path, 1.0)
    gate.admitted["trial-001"] = (0.0, 40.0)
    _, figures = gate.affordable(TrialCost(100.0, 124.0, 1), runs, {"trial-001"}, {"trial-000"})
    assert figures["running_gpu_hours"] * 3600 == pytest.approx(176.0 + STOP_MARGIN_S, abs=3.0)


def test_a_trial_running_past_its_estimate_widens_the_next_ones_room(tmp_path):
    # trial-001 has run 50 s of an estimated 20 (unfinished): the study's ratio is at least 2.5, not trial-000's 1.5
    runs = _state(tmp_path, time.time())
    gate = _gate(tmp_path, 1.0)
    gate.estimates["trial-001"] = TrialCost(20.0, 25.0, 1)
    _, figures = gate.affordable(TrialCost(100.0, 124.0, 1), runs, {"trial-001"}, {"trial-000"})
    assert figures["study_ratio"] == pytest.approx(2.5, abs=0.3) and figures["measured_trials"] == 2
    assert figures["next_gpu_hours"] * 3600 == pytest.approx(124.0 * figures["study_ratio"] + STOP_MARGIN_S, abs=0.01)


def test_the_budget_stops_running_trials_once_it_is_spent(tmp_path):
    now = time.time()
    runs = [(name, out) for name, _, out in _state(tmp_path, now)]
    assert Gate(1.0, tmp_path, tmp_path / "state.sqlite").spent_out(runs, lambda: 1) is None
    gate = Gate(200 / 3600, tmp_path, tmp_path / "state.sqlite")
    why = gate.spent_out(runs, lambda: 1)
    assert why.startswith("the budget is spent") and "resumable" in why
    # what study.db records: the spend, and the margin kept for the trial stopped (spent + margin reached the budget)
    assert gate.stopped["running_gpu_hours"] * 3600 == pytest.approx(STOP_MARGIN_S, abs=0.01)
    assert gate.stopped["spent_gpu_hours"] * 3600 == pytest.approx(200.0, abs=3.0)
