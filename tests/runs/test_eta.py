"""The one ETA computation (lfgen/runs/eta.py): a run's from its own steps, an experiment's over its slots."""

from __future__ import annotations

import pytest

from lfgen.runs.eta import experiment_s, remaining_s


def test_a_run_keeps_the_pace_it_has_measured():
    assert remaining_s(10, 40, 120.0) == 360.0  # 12 s a step, 30 steps left
    assert remaining_s(40, 40, 480.0) == 0.0
    assert remaining_s(50, 40, 480.0) == 0.0  # past the total (a max_steps raised later): nothing left
    for steps, total, elapsed in ((0, 40, 10.0), (None, 40, 10.0), (10, None, 10.0), (10, 40, None), (10, 40, -1.0)):
        assert remaining_s(steps, total, elapsed) is None  # nothing measured yet, or not knowable


def test_pending_runs_take_the_first_slot_to_free():
    # one slot: everything in a row
    assert experiment_s([100.0], [50.0, 30.0], 1) == 180.0
    # two slots: 100 and 20 running; 50 starts at 20 (ends 70), 30 starts at 70 (ends 100), 10 at 100
    assert experiment_s([100.0, 20.0], [50.0, 30.0, 10.0], 2) == 110.0
    # more slots than runs: the longest run decides
    assert experiment_s([], [50.0, 30.0], 4) == 50.0
    assert experiment_s([], [], 1) == 0.0
    # a slot count below the runs running now cannot be: the running runs hold a slot each
    assert experiment_s([10.0, 10.0, 10.0], [5.0], 1) == 15.0


def test_an_unknown_pending_run_makes_the_experiment_unknown():
    assert experiment_s([10.0], [5.0, None], 2) is None
    assert experiment_s([10.0], [float("nan")], 2) is None
    assert experiment_s([-5.0], [5.0], 1) == pytest.approx(5.0)  # a run past its estimate is not negative time
