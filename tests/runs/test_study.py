"""lfgen/runs/study.py: a study's trials as rows, from a real Optuna study written here (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_score_studys_rows_give_eval_losses_back_and_no_value_to_a_pruned_trial(tmp_path: Path):
    """A real Optuna study, as the tuner writes one for --metric predict_rouge-l: eval losses reported negated,
    a pruned trial told PRUNED (Optuna then takes its last, negated, loss as its value)."""
    optuna = pytest.importorskip("optuna")
    from lfgen.runs.study import trial_rows

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'study.db'}")
    done, pruned = study.ask(), study.ask()
    for trial, losses in ((done, [6.1, 5.8]), (pruned, [6.3])):
        trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        for step, loss in enumerate(losses, start=1):
            trial.report(-loss, step * 30)
    study.tell(done, 16.7)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    rows = trial_rows(study)
    assert [(r["state"], r["value"]) for r in rows] == [("complete", 16.7), ("pruned", None)]
    assert rows[0]["intermediate"] == {30: 6.1, 60: 5.8} and rows[1]["intermediate"] == {30: 6.3}
    assert rows[1]["why"] == "pruned at step 30 (eval_loss 6.3)"
