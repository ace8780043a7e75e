"""The memory terms of a run's shape (R-STAGE-MEM): pairs, the reference forward and copy, the preference loss."""

from __future__ import annotations

import pytest

from lfgen.models import estimate_memory, fit_micro_batch
from lfgen.models.memory import GIB

QWEN = "Qwen/Qwen2-7B"  # vocabulary 152,064
DPO = {"sequences": 2, "reference": "adapter", "reference_sequences": 2, "loss": "logps"}


def test_a_pair_holds_the_activations_of_two_sequences():
    pair = estimate_memory(QWEN, micro_batch=1, sequences=2, loss="logps")
    two = estimate_memory(QWEN, micro_batch=2, loss="logps")
    assert pair.breakdown["activations"] == pytest.approx(two.breakdown["activations"])
    assert pair.breakdown["activations"] > estimate_memory(QWEN, micro_batch=1, loss="logps").breakdown["activations"]


def test_the_preference_loss_keeps_fp32_logits_and_is_not_fused_by_liger():
    # DPO upcasts the logits to fp32 and keeps them with the log-softmax: 16 B per token x vocabulary at the peak.
    s, v = 1024, 152064
    e = estimate_memory(QWEN, cutoff_len=s, loss="logps")
    causal = estimate_memory(QWEN, cutoff_len=s)
    assert e.breakdown["logits"] > causal.breakdown["logits"]
    liger = estimate_memory(QWEN, cutoff_len=s, loss="logps", enable_liger_kernel=True)
    assert liger.breakdown["logits"] * GIB > s * v * 12  # still the full vocabulary
    assert any("Liger's fused loss does not apply" in note for note in liger.notes)


def test_the_reference_forward_adds_its_logits_on_top_of_the_policys():
    # While the no-grad reference runs, the policy's fp32 logits and log-softmax (8 B) are alive beside the
    # reference's own (8 B): 8 x V x (2 + 2) sequences x s on top of the checkpoints.
    s, v = 2048, 152064
    e = estimate_memory(QWEN, micro_batch=1, cutoff_len=s, **DPO)
    without = estimate_memory(QWEN, micro_batch=1, cutoff_len=s, sequences=2, loss="logps")
    assert e.breakdown["weights"] == without.breakdown["weights"]  # LoRA: the adapter switched off, no copy
    assert e.total >= without.total
    peak = e.breakdown["activations"] + e.breakdown["logits"]
    kept = 28 * 3584 * 2 * s * 2  # checkpoints of 2 sequences
    assert peak * GIB >= kept + 8 * v * s * 4
    assert any("the same model with the adapter switched off" in note for note in e.notes)


def test_full_parameter_dpo_holds_a_frozen_copy_sharded_only_by_zero3():
    full = {"finetuning_type": "full", "micro_batch": 1, "cutoff_len": 512}
    copy = estimate_memory(QWEN, **full, **{**DPO, "reference": "copy"})
    alone = estimate_memory(QWEN, **full, sequences=2, loss="logps")
    assert copy.breakdown["weights"] - alone.breakdown["weights"] == pytest.approx(7_615_616_512 * 2 / GIB)
    z3 = {"num_gpus": 8, "zero_stage": 3, "deepspeed": True}
    sharded = estimate_memory(QWEN, **full, **z3, **{**DPO, "reference": "copy"})
    assert sharded.breakdown["weights"] < copy.breakdown["weights"] / 4
    assert any("a frozen copy of the weights" in note for note in copy.notes)


def test_a_reward_model_keeps_no_logits_for_backward():
    rm = estimate_memory(QWEN, sequences=2, loss="value")
    dpo = estimate_memory(QWEN, sequences=2, loss="logps")
    assert rm.breakdown["logits"] < dpo.breakdown["logits"]


def test_the_micro_batch_that_fits_counts_pairs():
    sft = fit_micro_batch(QWEN, 80, lora_target="all", cutoff_len=2048)
    dpo = fit_micro_batch(QWEN, 80, lora_target="all", cutoff_len=2048, **DPO)
    assert dpo.fits and sft.fits and dpo.micro_batch < sft.micro_batch
    assert dpo.micro_batch * dpo.gradient_accumulation_steps == 32  # 32 pairs, R-HW-BATCH's effective batch


def test_full_fine_tuning_that_does_not_fit_offers_zero_on_the_gpus_given_first():
    fit = fit_micro_batch(QWEN, 80, finetuning_type="full", num_gpus=4)
    assert not fit.fits
    assert fit.options[-2].changes == {"zero_stage": 2} and fit.options[-2].description == \
        "DeepSpeed ZeRO-2 on the 4 GPUs"
    assert fit.options[-1].changes["num_gpus"] > 4  # more GPUs only after the GPUs given
