"""The time model (lfgen/models/time.py, step_time.py): its structure against first principles, the Trainer's step
arithmetic, and the shipped constants against the published reference set (benchmarks/time_reference.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lfgen.catalogs.gpus import find_gpu, gpu_with_memory
from lfgen.errors import InputError
from lfgen.models import load_model
from lfgen.models.lengths import LengthModel
from lfgen.models.step_time import Device, micro_step
from lfgen.models.time import Schedule, estimate_time, optimizer_steps, settings_from, throughput, utilisation
from lfgen.models.trainable import count_trainable

MODEL = "Qwen/Qwen2.5-7B-Instruct"
A100 = find_gpu("A100-80")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def rate(gpu=A100, model=MODEL, lengths=None, **values) -> float:
    return throughput(model, gpu, settings_from(**values), lengths).tokens_per_s


def test_full_fine_tuning_is_slower_than_lora_and_checkpointing_costs_its_recompute():
    base = dict(micro_batch=4, cutoff_len=2048, packing=True)
    lora, full = rate(**base), rate(**base, finetuning_type="full")
    assert 1.2 < lora / full < 2.0  # ~6N vs ~8N FLOPs with recompute, plus the optimizer's state traffic
    no_gc = rate(**base, gradient_checkpointing=False)
    assert 1.15 < no_gc / lora < 1.6  # LoRA: 4N without recompute vs 6N with (torchtune measured -21%)


def test_a_per_step_overhead_dominates_short_sequences():
    short, long = rate(micro_batch=1, cutoff_len=128, packing=True), rate(micro_batch=1, cutoff_len=4096, packing=True)
    assert short < 0.5 * long


def test_padding_to_the_longest_sample_costs_and_group_by_length_saves_it():
    data = LengthModel.from_percentiles(200, 900, longest=4000)
    padded = rate(micro_batch=8, cutoff_len=2048, lengths=data)
    grouped = rate(micro_batch=8, cutoff_len=2048, lengths=data, group_by_length=True)
    assert grouped > 1.5 * padded  # same real tokens, far fewer padded ones


def test_qlora_fp32_and_eager_attention_are_slower():
    base = dict(micro_batch=2, cutoff_len=2048, packing=True)
    bf16 = rate(**base)
    assert rate(**base, quantization_bit=4) < bf16
    assert rate(**base, compute_dtype="fp32") < 0.5 * bf16  # FP32 runs without tensor cores (19.5 vs 312 TFLOPS)
    assert rate(**base, flash_attn="disabled") < bf16


def test_a_faster_gpu_is_faster_and_an_unknown_one_has_no_estimate():
    base = dict(micro_batch=4, cutoff_len=2048, packing=True)
    assert rate(gpu=find_gpu("H100"), **base) > rate(**base) > rate(gpu=find_gpu("T4"), **base)
    with pytest.raises(InputError, match="--gpu"):
        rate(gpu=gpu_with_memory(24), **base)


def test_the_step_time_is_the_mean_over_the_lengths_not_the_time_of_the_mean_length():
    """Attention grows with the square of the length: spread-out data with the same mean tokens is slower."""
    spread = LengthModel.from_mean_sd(2000, 1500, longest=8192)
    fixed = LengthModel.fixed(spread.mean(8192))
    base = dict(micro_batch=1, cutoff_len=8192, group_by_length=True)
    assert rate(lengths=spread, **base) < 0.97 * rate(lengths=fixed, **base)
    quantiles = spread.batch_max_quantiles(4, 8192, 12)
    assert quantiles == sorted(quantiles) and max(quantiles) <= 8192
    assert sum(quantiles) / 12 == pytest.approx(spread.batch_max(4, 8192), rel=0.1)  # the same longest-of-4, sampled
    assert fixed.batch_max_quantiles(4, 8192, 3) == [pytest.approx(spread.mean(8192))] * 3


def test_fused_attention_backward_recomputes_the_scores():
    """FlashAttention's backward costs 2.5 forwards; with checkpointing the forward runs twice: 4.5 in all."""
    spec, s = load_model(MODEL), settings_from(micro_batch=1, cutoff_len=8192, packing=True, flash_attn="fa2")
    device, lora = Device(A100.peak, 0.8, A100.arch), count_trainable(load_model(MODEL), **s.model_dump())
    train = micro_step(spec, device, s, lora, 1, 8192).attention
    forward = micro_step(spec, device, s, lora, 1, 8192, backward=False).attention
    assert train / forward == pytest.approx(4.5)
    eager = s.model_copy(update={"flash_attn": "disabled"})
    assert micro_step(spec, device, eager, lora, 1, 8192).attention / micro_step(
        spec, device, eager, lora, 1, 8192, backward=False).attention == pytest.approx(4.0)


def test_freeze_tuning_recomputes_only_its_trained_layers():
    """LlamaFactory checkpoints only layers with trainable weights: the frozen ones below run once."""
    base = dict(micro_batch=4, cutoff_len=2048, packing=True, finetuning_type="freeze", freeze_trainable_layers=2)
    with_gc, without_gc = rate(**base), rate(**base, gradient_checkpointing=False)
    assert with_gc / without_gc > 0.93  # 2 of 28 layers recomputed
    full = dict(base, finetuning_type="full")
    assert rate(**full) / rate(**full, gradient_checkpointing=False) < 0.85


def test_one_gemm_share_per_architecture_whatever_the_method():
    """Method differences are structure (FLOPs, adapters, dequantization), not a per-method prior; the 70 W T4
    has its own share, the V100 borrows the full-power cards' and is marked derived."""
    assert utilisation("Ampere", "lora")[0] == utilisation("Ampere", "full")[0] == utilisation("Ada", "oft")[0]
    assert utilisation("Turing")[0] < 0.5 * utilisation("Ampere")[0]
    volta, _, measured = utilisation("Volta")
    assert volta == utilisation("Ampere")[0] and not measured
    assert utilisation("Hopper")[0] < utilisation("Ampere")[0] and not utilisation("Hopper")[2]


def test_optimizer_steps_follow_the_trainer():
    assert optimizer_steps(475, 4, 1, 8, 5) == (75, 15)  # docs/estimates.md: 119 batches / 8 = 15 x 5
    assert optimizer_steps(1000, 2, 4, 4, 1.0) == (32, 32)
    assert optimizer_steps(1000, 2, 1, 1, 3.0, max_steps=7) == (7, 500)


def test_a_run_adds_its_evaluations_and_preference_pairs():
    settings = settings_from(micro_batch=4, gradient_accumulation=8, cutoff_len=1024, packing=True)
    plain = estimate_time(MODEL, A100, settings, Schedule(samples=3200, epochs=1))
    evaluated = estimate_time(MODEL, A100, settings, Schedule(samples=3200, epochs=1, eval_samples=160, eval_steps=25))
    assert plain.eval_s == 0 and evaluated.evaluations == 4 and evaluated.eval_s > 0
    assert evaluated.train_s == pytest.approx(plain.train_s)
    assert plain.steps == 100 and plain.tokens == 3200 * 1024
    assert plain.low_s < plain.train_s < plain.high_s
    dpo = estimate_time(MODEL, A100, settings.model_copy(update={"stage": "dpo"}), Schedule(samples=3200, epochs=1))
    assert dpo.train_s > 2 * plain.train_s and dpo.tokens == 2 * plain.tokens  # chosen + rejected, and a reference
    orpo = estimate_time(MODEL, A100, settings.model_copy(update={"stage": "dpo", "pref_loss": "orpo"}),
                         Schedule(samples=3200, epochs=1))
    assert orpo.train_s < dpo.train_s  # no reference forward
    with pytest.raises(InputError, match="ppo"):
        estimate_time(MODEL, A100, settings.model_copy(update={"stage": "ppo"}), Schedule(samples=10))


def test_the_json_has_exactly_the_documented_keys():
    found = estimate_time(MODEL, A100, settings_from(), Schedule(samples=100))
    assert set(found.to_json()) == {"train_s", "eval_s", "low_s", "high_s", "tokens", "tokens_per_s"}


def _reference():
    sys.path.insert(0, str(BENCH))
    import time_reference

    return time_reference, time_reference.load_reference()


def test_the_reference_set_is_large_varied_and_split_by_its_rule():
    module, reference = _reference()
    rows = reference["rows"]
    assert len(rows) >= 60 and len({r["id"].split("-")[0] for r in rows}) >= 4
    assert all(r["split"] == module.split_of(r["id"]) for r in rows)
    assert all(r["source"] and r["measured"] for r in rows + reference["independent"])
    assert not {r["id"] for r in reference["independent"]} & {r["id"] for r in rows}  # Qwen's table is apart
    fresh = reference["fresh"]  # issue 22's second independent set: at least 20 rows from sources new to the file
    assert len(fresh) >= 20 and all(r["split"] == "fresh" and r["source"] and r["measured"] for r in fresh)
    assert not {r["id"].split("-")[0] for r in fresh} & {r["id"].split("-")[0] for r in rows + reference["independent"]}


@pytest.mark.slow
def test_the_shipped_constants_give_the_documented_held_out_figures():
    """docs/estimates.md states these figures; a change of the model or its constants must update both."""
    module, reference = _reference()
    scored = module.score(reference, [r for r in reference["rows"] if r["split"] == "holdout"])
    ours, naive = module._stats([x[2] for x in scored]), module._stats([x[3] for x in scored])
    assert (round(ours["median"], 3), round(ours["p90"], 3), round(ours["worst"], 3)) == (0.144, 0.353, 0.698)
    assert ours["within_2x"] == ours["n"] and all(ours[k] < naive[k] for k in ("median", "p90", "worst"))
    qwen = module._stats([x[2] for x in module.score(reference, reference["independent"])])
    assert (round(qwen["median"], 3), round(qwen["p90"], 3), round(qwen["worst"], 3)) == (0.305, 0.456, 0.564)
    fresh = module._stats([x[2] for x in module.score(reference, reference["fresh"])])  # issue 22's second fresh set
    assert (round(fresh["median"], 3), round(fresh["p90"], 3), round(fresh["worst"], 3)) == (0.077, 0.363, 0.929)
