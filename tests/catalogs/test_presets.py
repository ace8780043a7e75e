"""The presets are the seeds' values, exactly (RULES.md §1)."""

from __future__ import annotations

import pytest

from lfgen import BuildOptions, build
from lfgen.errors import InputError
from lfgen.catalogs.presets import get_preset, load_presets, training_block

SEED_002 = {  # RULES.md §1, seed 002 "LoRA 参数配置示例"
    "lightweight": (16, 32, 0.1, "q_proj,v_proj"),
    "balanced": (32, 64, 0.1, "q_proj,k_proj,v_proj,o_proj"),
    "a800": (64, 128, 0.1, "all"),
    "large-rank": (128, 256, 0.1, "all"),
}
SEED_000 = {  # RULES.md §1, seed 000's four schemes, as LLM targets
    "conservative": (32, 64, 0.1, "q_proj,k_proj,v_proj,o_proj"),
    "alpha-4x": (32, 128, 0.1, "q_proj,k_proj,v_proj,o_proj"),
    "aggressive": (64, 128, 0.05, "all"),
    "efficiency": (8, 16, 0.1, "q_proj,v_proj"),
}
A800_TRAINING = {  # seed 002 "总结"; its learning_rate 2e-4 is R-LR-RANK's alternative (see below)
    "num_train_epochs": 3.0, "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 8, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
    "bf16": True, "flash_attn": "fa2", "stage": "sft", "finetuning_type": "lora", "cutoff_len": 2048,
    "val_size": 0.05, "eval_strategy": "steps", "eval_steps": 200, "logging_steps": 10, "save_steps": 500,
    "save_total_limit": 3,
}


@pytest.mark.parametrize("name,expected", {**SEED_002, **SEED_000}.items())
def test_preset_lora_block_is_the_seed(name, expected):
    config = build(name).config
    assert (config["lora_rank"], config["lora_alpha"], config["lora_dropout"], config["lora_target"]) == expected


# R-LR-RANK x R-LR-SIZE on the default 7.6B model: 3e-4 x 32 / alpha (two significant digits), the seeds' 2e-4 beside it
PRESET_RATES = {"lightweight": 3e-4, "balanced": 1.5e-4, "a800": 7.5e-5, "large-rank": 3.7e-5, "conservative": 1.5e-4,
                "alpha-4x": 7.5e-5, "aggressive": 7.5e-5, "efficiency": 5e-4}  # 6e-4, capped at R-LR's 5e-4


@pytest.mark.parametrize("name,rate", PRESET_RATES.items())
def test_the_learning_rate_follows_alpha_with_the_seeds_rate_as_the_alternative(name, rate):
    decision = build(name).decisions["learning_rate"]
    assert (decision.value, decision.rule) == (rate, "R-LR-RANK")
    assert "2e-4, the seeds' LoRA rate (R-LR" in decision.alternative
    alpha = build(name).config["lora_alpha"]
    assert decision.value == pytest.approx(min(3e-4 * 32 / alpha, 5e-4), rel=0.05)  # lr x alpha held, under the cap


@pytest.fixture
def unknown_gpu(monkeypatch):
    """A GPU the driver shows that lfgen's catalog cannot name: nothing is sized, the seed's block stands."""
    from lfgen.catalogs import machine

    monkeypatch.delenv(machine.GPU_ENV, raising=False)
    monkeypatch.setattr(machine, "driver_gpus", lambda: ["NVIDIA Mystery GPU"])


@pytest.mark.parametrize("name", list(SEED_002) + list(SEED_000))
def test_every_preset_has_the_training_block_of_the_seed(name, unknown_gpu):
    result = build(name)
    assert any("NVIDIA Mystery GPU is not in lfgen's GPU catalog" in w for w in result.warnings)
    config = result.config
    assert {k: config[k] for k in A800_TRAINING} == A800_TRAINING
    assert config["report_to"] == "tensorboard" and config["plot_loss"] is True
    assert config["disable_gradient_checkpointing"] is False  # R-HW-GC via LlamaFactory's own key


def test_every_preset_names_its_source():
    presets = load_presets()
    assert list(presets)[:4] == list(SEED_002)
    assert set(presets) == set(SEED_002) | set(SEED_000) | {"caption", "auto"}
    for preset in presets.values():
        assert preset.source.startswith(("seed 002", "seed 000", "seed 001", "lfgen"))
    # seed 000's schemes train both towers on a vision-language model; seed 001's recipe is for one
    assert all(presets[name].vision.values == {"freeze_vision_tower": False} for name in SEED_000)
    assert presets["caption"].vision.only and presets["caption"].vision.rule == "R-VLM-CAPTION"
    assert "seed 002" in training_block().source


def test_seed_000_names_do_not_collide_with_seed_002():
    assert not set(SEED_000) & set(SEED_002)


def test_auto_takes_rank_dropout_epochs_warmup_from_data_and_batch_from_gpu():
    small = build("auto", BuildOptions.parse(samples=800, gpu="A100-40")).config
    assert (small["lora_rank"], small["lora_alpha"], small["lora_dropout"]) == (32, 64, 0.2)
    assert (small["num_train_epochs"], small["warmup_ratio"]) == (5.0, 0.05)
    assert small["per_device_train_batch_size"] * small["gradient_accumulation_steps"] == 32
    big = build("auto", BuildOptions.parse(samples=80_000, gpu="H100"))
    config = big.config
    assert (config["lora_rank"], config["lora_dropout"], config["num_train_epochs"], config["weight_decay"]) == \
        (128, 0.0, 1.0, 0.0)  # R-DATA-LARGE: one epoch above 50,000 rows
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 32
    assert config["per_device_train_batch_size"] > small["per_device_train_batch_size"]  # 80 GB fits more than 40
    assert big.decisions["per_device_train_batch_size"].rule == "R-HW-HEADROOM"


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown preset 'a80'.*did you mean: a800.*lightweight, balanced"):
        get_preset("a80")
