"""lfgen tune's samplers and pruners: one list each, which --sampler/--pruner offer and a study's settings are
checked against, and the same sampler and pruner every time a study is opened."""

from __future__ import annotations

import pytest

from lfgen.tuning import strategies


def test_the_cli_offers_the_one_list(cli):
    from lfgen.cli.tuning import tune

    choices = {param.name: tuple(param.type.choices) for param in tune.params if param.name in ("sampler", "pruner")}
    assert choices == {"sampler": strategies.SAMPLERS, "pruner": strategies.PRUNERS}


def test_a_reopened_study_gets_the_same_pruner_and_a_sampler_seeded_past_its_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    settings = {"metric": "predict_rouge-l", "sampler": "random", "pruner": "asha", "seed": 3}
    study = strategies.open_study(tmp_path, "s", settings, min_resource=5)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # a score: the registry says higher is better
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params["x"]
    again = strategies.open_study(tmp_path, "s", settings, min_resource=5)
    assert isinstance(again.pruner, optuna.pruners.SuccessiveHalvingPruner) and len(again.trials) == 1
    second = again.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params["x"]
    assert second != first  # seed 3 + 1 trial: the resumed study does not repeat its first proposal
