"""Data size at the extremes: R-EVAL-SIZE (held-out rows capped, 5-20 evaluations, evaluation under a tenth of the
training, an honest word on tiny sets) and R-DATA-LARGE (one epoch, a short warmup, tokenizing workers, checkpoints)."""

from __future__ import annotations

import math

import pytest

from lfgen import BuildOptions, build
from lfgen.builder.scale_rules import held_rows

QWEN7 = "Qwen/Qwen2.5-7B-Instruct"


def _steps(config: dict, samples: int) -> int:
    val = config["val_size"]
    held = math.ceil(val * samples) if val < 1 else val
    per_epoch = math.ceil(math.ceil((samples - held) / config["per_device_train_batch_size"])
                          / config["gradient_accumulation_steps"])
    return math.ceil(config["num_train_epochs"] * per_epoch)


@pytest.mark.parametrize("n,held", [(80, 8), (200, 20), (500, 50), (1000, 50), (12_000, 600), (20_000, 1000),
                                    (1_000_000, 1000)])
def test_held_out_rows_are_capped_and_floored(n, held):
    assert held_rows(n) == held


def test_a_million_rows_evaluate_a_thousand_rows_ten_times_in_one_epoch():
    """Issue 20: val_size 0.05 with eval_steps 200 evaluated 50,000 rows about 300 times, twice the training compute;
    2 epochs; a 5,938-step warmup."""
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="A100-80", samples=1_000_000))
    config = result.config
    total = _steps(config, 1_000_000)
    assert config["val_size"] == 1000 and result.decisions["val_size"].rule == "R-EVAL-SIZE"
    assert 5 <= total // config["eval_steps"] <= 20 and result.decisions["eval_steps"].rule == "R-EVAL-SIZE"
    assert "evaluation ~0% of the training time (lfgen's time model)" in result.decisions["eval_steps"].reason
    assert config["num_train_epochs"] == 1.0 and result.decisions["num_train_epochs"].rule == "R-DATA-LARGE"
    assert "2 epochs" in result.decisions["num_train_epochs"].alternative  # seed 002's other end, named beside it
    assert math.ceil(config["warmup_ratio"] * total) <= 500 and "0.1" in result.decisions["warmup_ratio"].alternative
    assert (total - 1) // config["save_steps"] <= 20 and config["save_steps"] % config["eval_steps"] == 0
    assert config["preprocessing_num_workers"] == 16


def test_a_preference_stage_keeps_its_epochs_and_counts_pairs():
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="A100-80", stage="dpo", samples=1_000_000))
    config = result.config
    assert config["num_train_epochs"] == 3.0 and result.decisions["num_train_epochs"].rule == "R-STAGE-DATA"
    assert config["val_size"] == 1000 and 5 <= _steps(config, 1_000_000) // config["eval_steps"] <= 20
    assert "micro-batch 4 = " in result.decisions["eval_steps"].reason  # pairs per micro-batch, as the batch


def test_200_rows_get_an_honest_warning_not_a_10_row_split():
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="A100-80", samples=200))
    assert result.config["val_size"] == 20 and result.config["num_train_epochs"] == 5.0
    (warning,) = [w for w in result.warnings if w.startswith("R-EVAL-SIZE")]
    assert "only 20 held-out rows" in warning and "eval_dataset" in warning
    total = _steps(result.config, 200)
    assert total // result.config["eval_steps"] >= 5 and result.config["save_steps"] < total


def test_evaluation_too_costly_for_the_training_evaluates_less_often_then_on_fewer_rows():
    """With predict_with_generate every evaluation generates an answer per held-out row: lfgen's time model puts even
    5 evaluations of 1,000 rows far over a tenth of the training, so the split shrinks and the run evaluates 5 times."""
    plain = build("auto", BuildOptions.parse(model=QWEN7, gpu="H100", samples=20_000))
    assert plain.config["val_size"] == 0.05 and "lfgen's time model" in plain.decisions["eval_steps"].reason
    generating = build("auto", BuildOptions.parse(model=QWEN7, gpu="H100", samples=20_000,
                                                  set={"predict_with_generate": True}))
    config = generating.config
    assert config["val_size"] == 50 and "even at 5 evaluations that costs" in generating.decisions["val_size"].reason
    assert _steps(config, 20_000) // config["eval_steps"] == 5
    assert "evaluating that often costs over 10% of the training" in generating.decisions["eval_steps"].reason


def test_the_seed_values_stay_in_the_middle():
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="A100-80", samples=12_000))
    assert (result.config["val_size"], result.config["eval_steps"], result.config["save_steps"]) == (0.05, 200, 500)
    assert result.decisions["val_size"].rule == "LF-SKELETON" and "R-EVAL-SIZE" in result.decisions["val_size"].reason


def test_your_split_and_eval_set_are_yours():
    mine = build("auto", BuildOptions.parse(samples=1_000_000, set={"val_size": 0.01}))
    assert mine.config["val_size"] == 0.01
    separate = build("auto", BuildOptions.parse(samples=1_000_000, set={"eval_dataset": "my_eval"}))
    assert separate.config.get("val_size") == 0.05  # the skeleton's, untouched: the eval set is separate
