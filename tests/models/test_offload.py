"""DeepSpeed CPU offload in the memory estimate (R-MULTI-DS, lfgen/models/zero.py): the GPU share falls by exactly
the terms offload moves, the CPU RAM it takes follows DeepSpeed's own estimator, and LlamaFactory #6755's CPU OOM is
predicted."""

from __future__ import annotations

import pytest

from lfgen.models import estimate_memory
from lfgen.models.memory import GIB
from lfgen.models.zero import CPU_BUFFER

QWEN7 = "Qwen/Qwen2.5-7B-Instruct"
FULL = dict(finetuning_type="full", deepspeed=True, num_gpus=8, micro_batch=1)
BOTH = dict(offload_optimizer="cpu", offload_param="cpu")
UNMOVED = ("activations", "logits", "overhead")


def test_zero2_offload_moves_the_gradients_and_optimizer_states_off_the_gpu():
    plain = estimate_memory(QWEN7, zero_stage=2, **FULL)
    offloaded = estimate_memory(QWEN7, zero_stage=2, offload_optimizer="cpu", **FULL)
    moved = plain.breakdown["gradients"] + plain.breakdown["optimizer"]
    assert moved > 10 and offloaded.total == pytest.approx(plain.total - moved)
    assert offloaded.breakdown["gradients"] == offloaded.breakdown["optimizer"] == 0.0
    for part in ("weights", *UNMOVED):
        assert offloaded.breakdown[part] == pytest.approx(plain.breakdown[part])
    # DeepSpeed's 16 B per parameter (fp32 gradient, master weight, Adam's m and v) x its 1.5 buffer factor
    assert offloaded.cpu_gib == pytest.approx(plain.trainable_params * 16 * CPU_BUFFER / GIB)
    assert plain.cpu_gib == 0.0 and any("CPU RAM" in note and "slower" in note for note in offloaded.notes)
    # below ZeRO-3 each rank first loads the whole 16-bit model into RAM: on 16 GPUs that is the larger (DeepSpeed's
    # max(4 x GPUs, 16) B per parameter, at LlamaFactory's 16-bit load)
    sixteen = estimate_memory(QWEN7, zero_stage=2, offload_optimizer="cpu", **{**FULL, "num_gpus": 16})
    assert sixteen.cpu_gib == pytest.approx(plain.trainable_params * 2 * 16 * CPU_BUFFER / GIB)


def test_zero3_offload_also_moves_the_weight_partitions_leaving_the_gathered_layers():
    unsharded = estimate_memory(QWEN7, zero_stage=0, **FULL)
    plain = estimate_memory(QWEN7, zero_stage=3, **FULL)
    offloaded = estimate_memory(QWEN7, zero_stage=3, **BOTH, **FULL)
    partition = unsharded.breakdown["weights"] / FULL["num_gpus"]  # every 16-bit weight / 8 GPUs
    assert offloaded.breakdown["weights"] == pytest.approx(plain.breakdown["weights"] - partition)
    assert offloaded.breakdown["weights"] > 0.5  # the layers gathered for the forward stay on the GPU
    assert offloaded.total == pytest.approx(plain.total - partition - plain.breakdown["gradients"]
                                            - plain.breakdown["optimizer"])
    for part in UNMOVED:
        assert offloaded.breakdown[part] == pytest.approx(plain.breakdown[part])
    # 18 B per parameter, as DeepSpeed's estimate_zero3_model_states_mem_needs (zero_init=1) x 1.5
    assert offloaded.cpu_gib == pytest.approx(plain.trainable_params * 18 * CPU_BUFFER / GIB, rel=1e-3)


def test_a_lora_run_at_zero3_offload_keeps_only_the_gathered_layers_and_its_activations():
    plain = estimate_memory("meta-llama/Llama-3.1-70B-Instruct", zero_stage=3, num_gpus=4, deepspeed=True)
    offloaded = estimate_memory("meta-llama/Llama-3.1-70B-Instruct", zero_stage=3, num_gpus=4, deepspeed=True, **BOTH)
    assert plain.breakdown["weights"] > 30 and offloaded.breakdown["weights"] < 4
    assert offloaded.breakdown["lora"] == offloaded.breakdown["optimizer"] == 0.0
    assert offloaded.cpu_gib > 130  # the 70B 16-bit weights (~131 GiB) in RAM, x 1.5


def test_llamafactory_6755_a_32b_full_fine_tune_with_ds_z3_offload_outgrows_744_gb_of_ram():
    """LlamaFactory #6755: Qwen2.5-32B-Instruct, full, ds_z3_offload, one H100 NVL, micro-batch 1, 744 GB of CPU RAM:
    killed by the kernel's OOM killer. 18 B/param (590 GB) would call it a fit; with DeepSpeed's buffer factor it is
    not, and the GPU side fits easily."""
    e = estimate_memory("Qwen/Qwen2.5-32B-Instruct", zero_stage=3, finetuning_type="full", deepspeed=True,
                        micro_batch=1, **BOTH)
    assert e.trainable_params * 18 / 1e9 < 744 < e.cpu_gib * GIB / 1e9
    assert e.needed < 94 * (1 - 0.1)


def test_the_zero_offload_papers_13b_on_one_32gb_v100_fits():
    """Ren et al. 2021: ZeRO-Offload trains a 13B model on a single 32 GB V100 (the 16-bit weights stay on the GPU)."""
    e = estimate_memory("meta-llama/Llama-2-13b-hf", finetuning_type="full", deepspeed=True, zero_stage=2,
                        offload_optimizer="cpu", micro_batch=1, cutoff_len=1024, compute_dtype="fp16")
    plain = estimate_memory("meta-llama/Llama-2-13b-hf", finetuning_type="full", deepspeed=True, zero_stage=2,
                            micro_batch=1, cutoff_len=1024, compute_dtype="fp16")
    assert e.needed <= 32 * 0.85 < plain.needed


def test_offload_where_deepspeed_ignores_it_changes_nothing():
    for stage, keys in ((0, BOTH), (2, dict(offload_param="cpu"))):
        plain = estimate_memory(QWEN7, zero_stage=stage, **FULL)
        assert estimate_memory(QWEN7, zero_stage=stage, **keys, **FULL).breakdown == plain.breakdown


def test_nvme_offload_takes_no_cpu_ram_and_says_where_the_states_went():
    e = estimate_memory(QWEN7, zero_stage=3, offload_optimizer="nvme", offload_param="nvme", **FULL)
    assert e.cpu_gib == 0.0 and e.breakdown["optimizer"] == 0.0 and any("NVMe" in note for note in e.notes)


def test_deepspeeds_step_builds_an_fp32_gradient_partition_where_activations_are_small():
    """stage_1_and_2.py step(): flatten(averaged_gradients).to(fp32), 2 + 4 B per parameter of the partition; it counts
    only beyond the activations and logits, which the step has freed."""
    from lfgen.models.zero import DEEPSPEED_STEP_BYTES, DEEPSPEED_SUB_GROUP, step_bytes

    short = dict(finetuning_type="full", deepspeed=True, num_gpus=2, micro_batch=1, cutoff_len=128)
    plain = estimate_memory(QWEN7, **{**short, "deepspeed": False}, zero_stage=2)  # the same bytes without the step
    ds = estimate_memory(QWEN7, **short, zero_stage=2)
    step = DEEPSPEED_STEP_BYTES[2] * ds.trainable_params / 2 / GIB
    assert step > 10
    transient = ds.breakdown["activations"] + ds.breakdown["logits"]
    grown = ds.breakdown["optimizer"] - plain.breakdown["optimizer"] - 4 * ds.trainable_params / 2 / GIB  # less master
    assert grown == pytest.approx(step - transient)
    # long sequences: the activations exceed the step's buffers, which then add nothing
    long = estimate_memory(QWEN7, **{**short, "cutoff_len": 32768, "micro_batch": 8}, zero_stage=2)
    assert long.breakdown["activations"] + long.breakdown["logits"] > step
    assert long.breakdown["optimizer"] == pytest.approx(ds.breakdown["optimizer"] - grown)
    # ZeRO-3 converts one sub_group_size group at a time; offload runs the step on the CPU; LoRA has no fp32 master
    s3 = estimate_memory(QWEN7, **{**short, "num_gpus": 1}, zero_stage=3).settings
    assert step_bytes(s3, 7_000_000_000, False, 0) == DEEPSPEED_STEP_BYTES[3] * DEEPSPEED_SUB_GROUP
    assert step_bytes(s3, 7_000_000_000, True, 0) == 0.0
    lora = estimate_memory(QWEN7, deepspeed=True, zero_stage=2, num_gpus=2, cutoff_len=128).settings
    assert step_bytes(lora, 7_000_000_000, False, 0) == 0.0
    zero1 = estimate_memory(QWEN7, **short, zero_stage=1).settings  # bf16 ZeRO-1 is BF16_Optimizer's: not counted
    assert step_bytes(zero1, 7_000_000_000, False, 0) == 0.0


def test_a_zero3_sub_group_can_run_over_by_one_parameters_partition():
    """stage3.py closes a sub-group once it reaches sub_group_size: the largest can hold one more parameter."""
    from lfgen.models.zero import DEEPSPEED_STEP_BYTES, DEEPSPEED_SUB_GROUP, step_bytes

    s = estimate_memory(QWEN7, finetuning_type="full", deepspeed=True, zero_stage=3, num_gpus=2).settings
    embedding = 152064 * 3584
    assert step_bytes(s, 7_000_000_000, False, embedding) == pytest.approx(
        DEEPSPEED_STEP_BYTES[3] * (DEEPSPEED_SUB_GROUP + embedding / 2))
    assert step_bytes(s, 1_000_000_000, False, embedding) == DEEPSPEED_STEP_BYTES[3] * 1_000_000_000 / 2
