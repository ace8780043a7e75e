"""lfgen tune's bad input: one Error: line before any trial starts, no traceback, nothing written."""

from __future__ import annotations

import pytest

from lfgen.tuning import space as spaces

pytest.importorskip("optuna")


def test_the_default_space_is_the_seeds_and_builds():
    space = spaces.default_space()
    assert space["lora_rank"] == {"low": 8, "high": 128, "type": "int", "log": True}
    assert space["alpha_ratio"] == {"choices": [1, 2, 4]}
    assert space["lora_target"] == {"choices": ["qv", "attn", "all"]}
    assert space["lora_dropout"] == {"low": 0.0, "high": 0.2}
    assert spaces.variants() == ["use_dora", "use_rslora", "pissa_init", "loraplus_lr_ratio"]
    assert set(spaces.grid(space, "default")) == set(space)


def test_alpha_follows_the_trial_rank():
    assert spaces.to_options({"lora_rank": 16, "alpha_ratio": 4, "use_dora": True}, base_rank=8) == \
        {"rank": 16, "alpha": 64, "set": {"use_dora": True}}
    assert spaces.to_options({"alpha_ratio": 2}, base_rank=8) == {"alpha": 16}


@pytest.mark.parametrize(("text", "message"), [
    ("lora_rnk: {choices: [8, 16]}\n", "lora_rnk"),
    ("lora_rank: {choices: []}\n", "choices must be a non-empty list"),
    ("learning_rate: {low: 1.0e-4, high: 1.0e-4}\n", "the range is empty"),
    ("learning_rate: {low: 5.0e-4, high: 1.0e-4}\n", "is above high"),
    ("alpha_ratio: {choices: [0, 2]}\n", "ratios must be numbers above 0"),
    ("lora_rank: {low: 0, high: 16, type: int}\n", "lora_rank: the build rejects 0"),
    ("lora_dropout: {low: 0.0, high: 1.5}\n", "lora_dropout: the build rejects 1.5"),
    ("", "the file is empty"),
])
def test_bad_spaces_are_one_error_line_and_write_nothing(tmp_path, monkeypatch, runner, cli, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(text)
    result = runner.invoke(cli, ["tune", "t", "--base", "a800", "--space", "space.yaml"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["tune", "nothing"], "no tune experiment"),
    (["tune", "t", "--base", "a800", "--timeout", "soon"], "--timeout: 'soon' is not a duration"),
    (["tune", "t", "--base", "a800", "--trials", "0"], "--trials: at least 1"),
    (["tune", "t", "--base", "a800", "--sampler", "grid", "--space", "space.yaml"], "--sampler grid needs choices"),
])
def test_bad_options_are_one_error_line(tmp_path, monkeypatch, runner, cli, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\n")
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_broken_study_db_is_one_state_error(tmp_path, monkeypatch, runner, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("lora_rank: {choices: [8, 16]}\n")
    result = runner.invoke(cli, ["tune", "t", "--base", "a800", "--space", "space.yaml", "--dry-run"])
    assert result.exit_code == 0 and "t: 20 trial(s) on a800" in result.output, result.output
    assert not (tmp_path / "experiments").exists()  # --dry-run writes nothing
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments.manifest import write

    write("t", "a800", BuildOptions(), [], {"axis": "tune", "space": {"lora_rank": {"choices": [8, 16]}},
                                             "trials": 2, "sampler": "tpe", "pruner": "asha", "metric": "eval_loss",
                                             "seed": 0}, allow_empty=True)
    (tmp_path / "experiments/t/study.db").write_bytes(b"not sqlite at all" * 100)
    result = runner.invoke(cli, ["tune", "t"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and "experiments/t/study.db: not a usable Optuna study" in result.stderr \
        and "study.db.broken" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = runner.invoke(cli, ["tune", "t", "--pruner", "median"])
    assert result.exit_code == 1 and "already set up" in result.stderr, result.stderr


def test_a_sweep_is_not_resumed_as_a_study(tmp_path, monkeypatch, runner, cli):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, ["sweep", "rank", "16", "--name", "s"]).exit_code == 0
    result = runner.invoke(cli, ["tune", "s"])
    assert result.exit_code == 1 and "not of lfgen tune" in result.stderr, result.stderr


def test_a_dpo_base_searches_pref_beta_and_the_dpo_band():
    from lfgen.builder.shapes import Shape

    space = spaces.default_space(Shape("dpo", "lora"))
    assert space["learning_rate"] == {"low": 5e-6, "high": 5e-5, "log": True}  # R-STAGE-LR, not the SFT 5e-5-1e-3
    assert space["pref_beta"] == {"low": 0.01, "high": 0.5, "log": True}  # R-STAGE-BETA
    assert {"lora_rank", "alpha_ratio", "lora_dropout", "lora_target"} <= set(space)
    full = spaces.default_space(Shape("sft", "full"))
    assert full == {"learning_rate": {"low": 1e-5, "high": 5e-5, "log": True}}  # nothing LoRA to search
    assert spaces.grid(full, "default", Shape("sft", "full")) == {"learning_rate": [1e-5, 2.2e-5, 5e-5]}
    assert spaces.default_space(Shape("sft", "lora")) == spaces.default_space()


def test_tune_on_a_dpo_base_is_tuned_by_the_reward_accuracy(tmp_path, monkeypatch):
    from lfgen import BuildOptions
    from lfgen.tuning.tuner import tune

    monkeypatch.chdir(tmp_path)
    plan = tune("d", base="auto", options=BuildOptions.parse(stage="dpo"), dry_run=True).lines
    assert "metric eval_rewards/accuracies (highest wins)" in plan[0]  # R-STAGE-METRIC: beta-invariant
    assert "  pref_beta: {'low': 0.01, 'high': 0.5, 'log': True}" in plan
    kto = tune("k", base="auto", options=BuildOptions.parse(stage="kto"), dry_run=True).lines
    assert "metric eval_rewards/margins (highest wins)" in kto[0]
    picked = tune("m", base="auto", options=BuildOptions.parse(stage="dpo"), metric="eval_loss", dry_run=True).lines
    assert "metric eval_loss (lowest wins)" in picked[0]  # --metric still wins
