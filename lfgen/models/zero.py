"""DeepSpeed ZeRO in the memory estimate (R-MULTI-DS): the optimizer step's buffers, and CPU offload (what leaves the
GPU and the CPU RAM it takes).

ZeRO-Offload (Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model Training"; DeepSpeed's
zero_optimization.offload_optimizer) keeps the fp32 master weights, Adam's states and the gradient partitions in CPU
RAM and runs the optimizer step there; ZeRO-Infinity's offload_param (ZeRO-3 only) moves the 16-bit weight partitions
too, gathering each layer onto the GPU as it runs. The GPU keeps the working set: activations, logits and, at ZeRO-3,
the layers being gathered.
"""

from __future__ import annotations

from typing import Any

GIB = 2**30
# DeepSpeed's estimate_zero2/zero3_model_states_mem_needs multiply the CPU memory by additional_buffer_factor 1.5
# (pinned staging buffers, the host allocator's fragmentation). LlamaFactory #6755 ran out of 744 GB of RAM fully
# fine-tuning Qwen2.5-32B on one GPU with ds_z3_offload: 18 B/param alone (590 GB) would not predict that, x 1.5
# (885 GB) does.
CPU_BUFFER = 1.5
FP32_GRAD_BYTES = 4.0  # the gradient partitions Adam reads on the CPU are fp32
# DeepSpeed's optimizer step builds an fp32 copy of the gradient partition before Adam runs: it flattens the 16-bit
# gradients into a new buffer and converts that (ZeRO-2: stage_1_and_2.py step(), flatten(averaged_gradients)
# .to(fp32); ZeRO-3: stage3.py _prepare_fp32_grad_for_sub_group, the same, one sub_group_size group at a time):
# 2 + 4 B per parameter. LlamaFactory's ds_z3 files set sub_group_size 1e9; a group closes once it reaches that,
# so it can run over by one parameter's partition. First principles, not fitted. ZeRO-1 is left out: with bf16
# DeepSpeed gives it to BF16_Optimizer, whose buffers differ. Activations are freed by the step, so its buffers
# count only beyond the backward's.
DEEPSPEED_STEP_BYTES = {2: 6.0, 3: 6.0}
DEEPSPEED_SUB_GROUP = 1e9


def offloads(s: Any) -> tuple[bool, bool]:
    """(optimizer, parameters) offloaded for MemorySettings *s*: DeepSpeed offloads the optimizer at ZeRO-1 and above
    and the parameters at ZeRO-3 only; elsewhere it ignores the keys."""
    return s.zero_stage >= 1 and s.offload_optimizer != "none", s.zero_stage == 3 and s.offload_param != "none"


def cpu_bytes(s: Any, trainable: int, state_bytes: float, whole_weights: float, notes: list[str]) -> float:
    """Bytes of CPU RAM on the node for what offload moves there (every rank's share: they share the node's RAM),
    noting what moved and its cost in *notes*. *state_bytes*: the optimizer's bytes per trainable parameter (with
    DeepSpeed's fp32 master copy); *whole_weights*: every weight's bytes, unsharded (used with offload_param)."""
    off_optimizer, off_params = offloads(s)
    if not (off_optimizer or off_params):
        return 0.0
    moved = trainable * (FP32_GRAD_BYTES + state_bytes) if off_optimizer else 0.0  # DeepSpeed's 16 B/param with Adam
    if off_params:  # the 16-bit weights, and an adapter's own (LlamaFactory keeps it in fp32; DeepSpeed in 16-bit)
        moved += whole_weights + (trainable * 2.0 if s.finetuning_type not in ("full", "freeze") else 0.0)
    peak = moved
    if s.zero_stage < 3:  # below ZeRO-3 (no zero.Init) every rank loads the whole model into RAM before DeepSpeed
        peak = max(moved, whole_weights * s.num_gpus)  # moves it: DeepSpeed's max(4 x GPUs, 16) B, at the 16-bit load
    what = "optimizer states, fp32 master weights and gradient partitions" + (", and the weights," if off_params else "")
    devices = {s.offload_optimizer if off_optimizer else "none", s.offload_param if off_params else "none"} - {"none"}
    if devices == {"nvme"}:
        notes.append(f"ZeRO-{s.zero_stage} offload to NVMe: the {what} ({moved / GIB:.0f} GiB) live on the disk; every "
                     "step reads and writes them there, far slower than training on GPUs with room")
        return 0.0
    notes.append(f"ZeRO-{s.zero_stage} CPU offload: the {what} live in CPU RAM, ~{peak * CPU_BUFFER / GIB:.0f} GiB on "
                 f"the node (x {CPU_BUFFER} for pinned buffers, as DeepSpeed's estimator); every step copies them over "
                 "PCIe and runs Adam on the CPU: slower than training on GPUs with room")
    return peak * CPU_BUFFER


def step_bytes(s: Any, trainable: int, off_optimizer: bool, largest_param: int) -> float:
    """Bytes of the flat 16-bit and fp32 gradient partition DeepSpeed's step builds; *largest_param*: the elements
    of the model's largest parameter (a ZeRO-3 sub-group can run over by its partition)."""
    per = DEEPSPEED_STEP_BYTES.get(s.zero_stage) if s.deepspeed and s.finetuning_type in ("full", "freeze") else None
    if per is None or off_optimizer:  # offload: the step runs on the CPU, from gradients already moved there
        return 0.0
    partition = trainable / s.num_gpus
    if s.zero_stage == 3:
        partition = min(partition, DEEPSPEED_SUB_GROUP + largest_param / s.num_gpus)
    return per * partition
