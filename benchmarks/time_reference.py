"""lfgen's training-throughput estimate next to published measurements, beside a naive calculator, per split.

Run: ``python benchmarks/time_reference.py`` (the report), ``--fit`` (least squares, with scipy, which lfgen[train]
brings through llamafactory, of the fitted constants on
the fit rows only; ``--write`` stores them in presets/throughput.yaml), ``--check-split`` (recompute the split
rule from the row ids: it was fixed before anything was fitted). The rows, their sources and every setting
they state are in ``benchmarks/time_reference.yaml``.

Each row is compared in the unit its source measured: real tokens per second per GPU, or samples per second
(ms-swift). The naive calculator is the web calculators' rule: 6 x parameters x tokens at 40% of the GPU's
dense 16-bit peak, on the same rows with the same real tokens. Error = estimate / measured - 1. Qwen's README
profiling table is never fitted nor held out: it is scored apart as an independent check. Settings lfgen
does not model (torchtune's optimizer-in-backward and activation offloading) are ignored, so
those rows count against lfgen as they are.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lfgen.catalogs.gpus import find_gpu  # noqa: E402
from lfgen.models import load_model  # noqa: E402
from lfgen.models import step_time  # noqa: E402
from lfgen.models.catalog import spec_from_config  # noqa: E402
from lfgen.models.lengths import LengthModel  # noqa: E402
from lfgen.models.modules import inventory  # noqa: E402
from lfgen.models.time import settings_from, throughput  # noqa: E402

HERE = Path(__file__).resolve().parent
NAIVE_SHARE = 0.40
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
FITTED = ("kernel_seconds", "step_seconds", "eager_bytes_per_score", "attention_share_sm75")
HOPPER_OVER_AMPERE = 0.72  # LLM Foundry's H100 / A100 MFU of the same runs (throughput.yaml's Hopper source)


def load_reference() -> dict:
    reference = yaml.safe_load((HERE / "time_reference.yaml").read_text(encoding="utf-8"))
    reference["models"] = {**reference["models"], **reference.get("fresh_models", {})}
    return reference


def split_of(row_id: str) -> str:
    """The split rule, from the id alone (recorded in the YAML before anything was fitted)."""
    return "fit" if int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) / 2**32 < 0.6 else "holdout"


def _spec(models: dict, name: str):
    config = {k: v for k, v in models[name].items() if k != "note"}
    if config.get("catalog"):
        return load_model(name)
    return spec_from_config(config, name, "benchmarks/time_reference.yaml")


def settings_of(row: dict) -> tuple[Any, LengthModel | None]:
    """lfgen TimeSettings and the sample lengths for a row: what it states, LlamaFactory's defaults otherwise."""
    method = row["method"]
    values: dict[str, Any] = {
        "micro_batch": row["micro_batch"], "gradient_accumulation": row.get("gradient_accumulation", 1),
        "num_gpus": row.get("num_gpus", 1), "cutoff_len": row["seq_len"], "packing": bool(row.get("packing")),
        "group_by_length": bool(row.get("group_by_length")),
        "finetuning_type": "lora" if method == "qlora" else method,
        "quantization_bit": 4 if method == "qlora" else None,
        "compute_dtype": row["precision"], "kbit_fp32_upcast": bool(row.get("kbit_fp32_upcast")),
        "pure_bf16": bool(row.get("pure_bf16")), "gradient_checkpointing": bool(row["gradient_checkpointing"]),
        "flash_attn": {"eager": "disabled", "sdpa": "sdpa", "fa2": "fa2"}[row["attention"]],
        "enable_liger_kernel": bool(row.get("chunked_loss")), "torch_compile": bool(row.get("compile")),
        "optim": {"paged_adamw_8bit": "paged_adamw_8bit", "adamw_8bit": "adamw_8bit"}.get(row.get("optim"), "adamw_torch"),
    }
    if method in ("lora", "qlora", "oft"):
        values["lora_target"] = ",".join(SHORT.get(t, t) for t in row["targets"].split(","))
        values["lora_rank"] = row["rank"]
    if method == "oft":
        values.update(oft_rank=row["rank"], oft_block_size=0)
    if method == "freeze" and row.get("freeze_layers"):
        values["freeze_trainable_layers"] = row["freeze_layers"]
    lengths = None
    known = row.get("lengths")
    if known and known.get("sd"):
        lengths = LengthModel.from_mean_sd(known["mean"], known["sd"], known.get("max"),
                                           drop_over=known.get("truncation") == "delete")
    elif known:
        lengths = LengthModel.fixed(known["mean"])
    return settings_from(**values), lengths


def measured(row: dict) -> tuple[float, str]:
    if "samples_per_s" in row:
        return row["samples_per_s"], "samples/s"
    return row["tokens_per_s"], "tokens/s"


def estimates(models: dict, row: dict) -> tuple[float, float]:
    """(lfgen, naive) in the row's measured unit."""
    spec = _spec(models, row["model"])
    settings, lengths = settings_of(row)
    gpu = find_gpu(row["gpu"])
    shape = throughput(spec, gpu, settings, lengths)
    ours = shape.tokens_per_s
    naive = NAIVE_SHARE * gpu.peak.tflops_16 * 1e12 / (6 * inventory(spec).total_params)
    if "samples_per_s" in row:  # per sample: the kept samples' mean real length
        per_sample = shape.real_tokens / settings.micro_batch
        return ours / per_sample, naive / per_sample
    return ours, naive


def _stats(errors: list[float]) -> dict[str, float]:
    absolute = sorted(abs(e) for e in errors)
    p90 = absolute[min(len(absolute) - 1, math.ceil(0.9 * len(absolute)) - 1)]
    return {"n": len(errors), "median": statistics.median(absolute), "p90": p90, "worst": absolute[-1],
            "within_2x": sum(0.5 <= 1 + e <= 2.0 for e in errors)}


def score(reference: dict, rows: list[dict]) -> list[tuple[dict, float, float, float]]:
    """(row, measured, lfgen error, naive error) for every row."""
    out = []
    for row in rows:
        value, _ = measured(row)
        ours, naive = estimates(reference["models"], row)
        out.append((row, value, ours / value - 1, naive / value - 1))
    return out


def _sides(errors: list[float]) -> str:
    """How many estimates are slower (time too long) and faster than measured."""
    return f"  ({sum(e < 0 for e in errors)} slower, {sum(e > 0 for e in errors)} faster)"


def _line(label: str, errors: list[float]) -> str:
    s = _stats(errors)
    return (f"{label:34} n={s['n']:3}  median {100 * s['median']:5.1f}%  p90 {100 * s['p90']:5.1f}%  "
            f"worst {100 * s['worst']:6.1f}%  within 2x {s['within_2x']}/{s['n']}")


def report(reference: dict) -> None:
    rows = reference["rows"]
    scored = score(reference, rows)
    print(f"{'split':8} {'row':56} {'measured':>12} {'lfgen':>7} {'naive':>7}")
    for row, value, ours, naive in scored:
        unit = measured(row)[1]
        print(f"{row['split']:8} {row['id'][:56]:56} {value:8.2f} {unit[:3]} {100 * ours:+6.1f}% {100 * naive:+6.1f}%")
    for split in ("fit", "holdout"):
        part = [x for x in scored if x[0]["split"] == split]
        print(_line(f"{split} lfgen", [x[2] for x in part]) + _sides([x[2] for x in part]))
        print(_line(f"{split} naive (6N x tokens at 40%)", [x[3] for x in part]))
        for source in sorted({x[0]["id"].split("-")[0] for x in part}):
            some = [x for x in part if x[0]["id"].split("-")[0] == source]
            print(_line(f"  {split} {source}: lfgen", [x[2] for x in some]) + _sides([x[2] for x in some]) + "   naive median "
                  f"{100 * _stats([x[3] for x in some])['median']:.1f}%")
    independent = score(reference, reference.get("independent", []))
    if independent:
        print("independent check (Qwen README 'Profiling of Memory and Speed', never fitted nor held out):")
        for row, value, ours, naive in independent:
            print(f"  {row['id']:44} {value:8.1f} tok/s  lfgen {100 * ours:+6.1f}%  naive {100 * naive:+6.1f}%")
        print(_line("independent lfgen", [x[2] for x in independent]) + _sides([x[2] for x in independent]))
        print(_line("independent naive", [x[3] for x in independent]))
    fresh = score(reference, reference.get("fresh", []))
    if fresh:  # issue 22's second independent set: scored per source, never fitted
        print("fresh set (issue 22, second pass: assembled and scored before the model changed; never fitted):")
        for row, value, ours, naive in fresh:
            print(f"  {row['id']:44} {value:9.1f} tok/s  lfgen {100 * ours:+6.1f}%  naive {100 * naive:+6.1f}%")
        print(_line("fresh lfgen", [x[2] for x in fresh]) + _sides([x[2] for x in fresh]))
        print(_line("fresh naive", [x[3] for x in fresh]))
        groups = {x[0]["id"].split("-")[0] for x in fresh} | {"-".join(x[0]["id"].split("-")[:2]) for x in fresh
                                                              if x[0]["id"].startswith("llmfoundry")}
        for source in sorted(groups):  # LLM Foundry per GPU too: its H100 / A100 ratio set the Hopper share
            some = [x for x in fresh if x[0]["id"] == source or x[0]["id"].startswith(source + "-")]
            print(_line(f"  fresh {source}: lfgen", [x[2] for x in some]) + _sides([x[2] for x in some])
                  + f"   naive median {100 * _stats([x[3] for x in some])['median']:.1f}%")


POWER_CAPPED = ("Turing",)  # the T4: 70 W for 65 TFLOPS, its clocks drop under sustained tensor load
COMMON = ("Ampere", "Ada")  # full-power cards: one GEMM share between them


def _archs(rows: list[dict]) -> list[str]:
    """The shares the fit rows measure: the power-capped T4's own, one for the full-power cards."""
    found = {find_gpu(row["gpu"]).arch for row in rows}
    return [a for a in POWER_CAPPED if a in found] + (["common"] if found & set(COMMON) else [])


def _source(row: dict) -> str:
    return row["id"].split("-")[0]


def fit(reference: dict) -> dict[str, Any]:
    """Least squares of log(estimate / measured) over the fit rows, each source weighted equally (a source with 40
    rows must not outvote one with 4): the fitted constants and one GEMM share per GPU architecture."""
    from scipy.optimize import least_squares

    rows = [r for r in reference["rows"] if r["split"] == "fit"]
    archs = _archs(rows)
    per_source: dict[str, int] = {}
    for row in rows:
        per_source[_source(row)] = per_source.get(_source(row), 0) + 1
    weights = [1 / math.sqrt(per_source[_source(row)]) for row in rows]
    data = step_time.constants()
    start = [math.log(data["fitted"][k]) for k in FITTED] + [math.log(0.5)] * len(archs)

    def apply(x) -> None:
        data["fitted"] = {k: math.exp(v) for k, v in zip(FITTED, x)}
        table = {"fallback": data["utilisation"]["fallback"]}
        for arch, v in zip(archs, x[len(FITTED):]):
            for name in (COMMON if arch == "common" else (arch,)):
                table[name] = {"share": min(1.0, math.exp(v)), "measured": True, "source": "fit"}
        table["Hopper"] = {"share": HOPPER_OVER_AMPERE * table["Ampere"]["share"], "source": "derived"}
        data["utilisation"] = table

    def residuals(x):
        apply(x)
        return [w * math.log(1 + e) for w, (_, _, e, _) in zip(weights, score(reference, rows))]

    # soft_l1: a few source rows that no model can meet (torchtune's A6000 LoRA row needs more than the card's
    # peak) must not drag every constant towards them
    result = least_squares(residuals, start, method="trf", loss="soft_l1", f_scale=0.2)
    apply(result.x)
    ratios = sorted(1 / (1 + e) for _, _, e, _ in score(reference, rows))  # measured / estimated
    low, high = ratios[int(0.1 * len(ratios))], ratios[math.ceil(0.9 * len(ratios)) - 1]
    counts = {arch: sum(find_gpu(r["gpu"]).arch == arch for r in rows) for arch in set(COMMON) | set(POWER_CAPPED)}
    return {"fitted": data["fitted"], "utilisation": data["utilisation"], "range": (low, high), "counts": counts,
            "per_source": per_source}


def write(found: dict[str, Any]) -> None:
    """Store a fit in presets/throughput.yaml (the fitted, utilisation and range blocks)."""
    path = HERE.parent / "presets" / "throughput.yaml"
    text = path.read_text(encoding="utf-8").split("\nfitted:\n")[0]
    lines = ["fitted:"] + [f"  {k}: {v:.4g}" for k, v in found["fitted"].items()]
    lines += ["utilisation:  # share of the dense 16-bit / FP32 peak a large GEMM reaches, per GPU architecture",
              "  fallback: {Volta: Ampere, Blackwell: Hopper}  # the V100 is a full-power card; Blackwell borrows Hopper"]
    balance = ", ".join(f"{k} {v}" for k, v in sorted(found["per_source"].items()))
    common = sum(found["counts"][a] for a in COMMON)
    for arch, row in found["utilisation"].items():
        if arch in ("fallback", "Hopper"):
            continue
        what = ("the power-capped T4's own (70 W for 65 TFLOPS: its clocks drop under sustained tensor load); "
                f"fitcheck-llm's T4 rows, {found['counts'][arch]}") if arch in POWER_CAPPED else (
            "one share for the full-power cards, Ampere and Ada together: ms-swift A100, torchtune A100 / A6000 / "
            f"RTX 4090 and PEFT L40S rows, {common}")
        lines.append(f"  {arch}: {{share: {row['share']:.3f}, measured: true,")
        lines.append(f"    source: \"fitted on the fit rows of benchmarks/time_reference.yaml ({what} rows), every source "
                     f"weighted equally ({balance})\"}}")
    ampere = found["utilisation"]["Ampere"]["share"]
    lines.append(f"  Hopper: {{share: {HOPPER_OVER_AMPERE * ampere:.3f}, source: \"no Hopper row in the fit set: "
                 f"{HOPPER_OVER_AMPERE} x Ampere's, the H100 / A100 MFU ratio of the same runs in LLM Foundry's benchmark "
                 "table (mosaicml/llm-foundry scripts/train/benchmarking/README.md: e.g. 7b, 2048 tokens, 8 GPUs: "
                 "46.4% vs 64.2%)\"}")
    low, high = found["range"]
    lines.append(f"range: {{low: {low:.3f}, high: {high:.3f}, derived_widen: 1.5, source: \"10th and 90th percentile "
                 "of measured / estimated on the fit rows; architectures without a measurement widen it 1.5x\"}")
    path.write_text(text + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    reference = load_reference()
    if "--check-split" in sys.argv:
        wrong = [r["id"] for r in reference["rows"] if r["split"] != split_of(r["id"])]
        print("split matches the rule" if not wrong else f"split differs from the rule: {wrong}")
        return
    if "--fit" in sys.argv:
        found = fit(reference)
        print("fitted on the fit rows:", {k: f"{v:.4g}" for k, v in found["fitted"].items()})
        for arch, row in found["utilisation"].items():
            if arch != "fallback":
                print(f"  {arch}: share {row['share']:.3f}")
        print(f"  range (measured / estimated p10, p90): {found['range'][0]:.3f}, {found['range'][1]:.3f}")
        fitted_rows = score(reference, [r for r in reference["rows"] if r["split"] == "fit"])
        print(_line("fit lfgen (after the fit)", [x[2] for x in fitted_rows]))
        if "--write" in sys.argv:
            write(found)
            step_time.constants.cache_clear()
            print("wrote presets/throughput.yaml")
        return
    report(reference)


if __name__ == "__main__":
    main()
