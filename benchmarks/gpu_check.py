"""The GPU check kit: short real LlamaFactory runs of lfgen configs, measured beside lfgen's estimates.

Run on a machine with one NVIDIA GPU: ``python benchmarks/gpu_check.py --gpu H100 --out gpu_check`` (unattended,
under 8 minutes on one H100: it starts no new case after --budget seconds). On a CPU: ``--smoke`` runs one
tiny model (lfgen.tiny) for a few steps, to check the kit itself (the test suite does; its figures are a CPU's).

For each case of the matrix (model size x method x cutoff x micro-batch) the kit builds a random-weight model of a
real catalog architecture from its config (memory and speed do not depend on the weights: nothing is
downloaded), a dataset whose every sample is longer than cutoff_len (each batch is exactly micro-batch x
cutoff_len tokens), the config with ``lfgen.build`` (LlamaFactory's own defaults otherwise), trains it with
``llamafactory-cli train`` for --steps steps, and records:

* peak memory: the GPU's ``memory.used`` from nvidia-smi (sampled every 0.2 s; the kit needs the GPU to itself),
  and torch's ``vram_reserved`` / ``vram_allocated`` that LlamaFactory logs with RECORD_VRAM=1;
* tokens/s: micro-batch x cutoff_len / the steady seconds per step (the last rate tqdm printed);
* lfgen's estimates beside them: the memory peak (and what must fit) and the time model's tokens/s.

Outputs in --out: ``gpu_check.csv``; ``time_rows.yaml`` and ``memory_rows.yaml``, rows in the schemas of
benchmarks/time_reference.yaml and memory_reference.yaml, ready to append (time rows take the split rule of
their id; memory rows are held out).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lfgen import launch  # noqa: E402

MATRIX = [  # (catalog model, method, cutoff_len, micro-batch): ~16 runs of 6 steps fit in 8 minutes on an H100
    *[("Qwen/Qwen2.5-0.5B-Instruct", m, c, b) for m in ("lora", "qlora", "full") for c in (512, 2048) for b in (1, 4)],
    *[("Qwen/Qwen2.5-1.5B-Instruct", m, c, 2) for m in ("lora", "qlora") for c in (512, 2048)],
    ("meta-llama/Llama-3.2-3B-Instruct", "lora", 1024, 2), ("meta-llama/Llama-3.2-3B-Instruct", "qlora", 1024, 2),
]
SMOKE = [("tiny", "lora", 64, 2)]
TEMPLATE = "qwen"  # the tiny tokenizer holds ChatML's special tokens
_RATE = re.compile(r"(\d+(?:\.\d+)?)(s/it|it/s)")


def make_model(name: str, folder: Path, tokenizer_dir: Path, device: str) -> Path:
    """A random-weight model of *name*'s architecture (its catalog config) with the tiny tokenizer."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lfgen.models.catalog import catalog_entry

    config = dict(catalog_entry(name)["config"])
    model_type = config.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **config)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    for item in tokenizer_dir.iterdir():
        if "token" in item.name or item.name == "special_tokens_map.json":
            shutil.copy(item, folder / item.name)
    del model
    return folder


def make_data(folder: Path, words: int, rows: int) -> Path:
    """Samples longer than any cutoff the matrix uses: every batch is micro-batch x cutoff_len tokens."""
    from lfgen.tiny import _WORDS

    folder.mkdir(parents=True, exist_ok=True)
    text = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    records = [{"instruction": f"{i} {text}", "input": "", "output": text} for i in range(rows)]
    (folder / "long.json").write_text(json.dumps(records), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"long": {"file_name": "long.json"}}), encoding="utf-8")
    return folder


def build_config(model_dir: Path, data_dir: Path, out_dir: Path, gpu: str | None, method: str, cutoff: int,
                 micro: int, steps: int, smoke: bool) -> dict[str, Any]:
    from lfgen import BuildOptions, build

    settings = {"finetuning_type": "full" if method == "full" else "lora", "cutoff_len": cutoff,
                "per_device_train_batch_size": micro, "gradient_accumulation_steps": 1, "max_steps": steps,
                "logging_steps": 1, "save_steps": 10**6, "save_strategy": "no", "val_size": 0, "eval_strategy": "no",
                "report_to": "none", "output_dir": str(out_dir), "overwrite_output_dir": True,
                "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "include_effective_tokens_per_second": True}
    if smoke:
        settings.update(flash_attn="auto", bf16=False, fp16=False)
    options = BuildOptions.parse(model=str(model_dir), template=TEMPLATE, dataset=["long"], dataset_dir=str(data_dir),
                                 gpu=gpu if not smoke else None, quant=4 if method == "qlora" else None,
                                 precision="fp32" if smoke else None, set=settings)
    config = dict(build("lightweight", options).config)
    config.update(settings)  # the kit's shape wins over any rule (the fit-to-GPU sizing included)
    return config


def _gpu_used_mib() -> float | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = launch.run_captured(launch.nvidia_smi_argv(smi, "memory.used"), cwd=".", env=dict(os.environ), timeout=10)
    try:
        return float(done.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def train(config_path: Path, log_path: Path, timeout: float) -> tuple[int, float | None, float]:
    """Run one config; (exit code, nvidia-smi peak GiB or None, wall seconds)."""
    cli = launch.find_cli()
    env = launch.train_env(dict(os.environ), None)
    baseline = _gpu_used_mib()
    start = time.monotonic()
    child = launch.spawn(launch.train_argv(cli, config_path), cwd=str(config_path.parent), env=env, log_path=log_path)
    peak = baseline
    try:
        while child.proc.poll() is None:
            if time.monotonic() - start > timeout:
                launch.stop_group(child.proc.pid)
                break
            used = _gpu_used_mib()
            if used is not None and peak is not None:
                peak = max(peak, used)
            time.sleep(0.2)
    finally:
        if child.proc.poll() is None:
            launch.stop_group(child.proc.pid)
    process = None if peak is None or baseline is None else (peak - baseline) / 1024
    return child.proc.wait(), process, time.monotonic() - start


def steady_step_seconds(log_path: Path) -> float | None:
    """The last rate tqdm printed (its smoothed recent seconds per step)."""
    found = _RATE.findall(log_path.read_text(encoding="utf-8", errors="replace")) if log_path.exists() else []
    if not found:
        return None
    value, unit = found[-1]
    return float(value) if unit == "s/it" else 1 / float(value)


def estimates(config: dict[str, Any], model_dir: Path, gpu_name: str, micro: int, cutoff: int) -> dict[str, float]:
    from lfgen.builder.estimates import estimate
    from lfgen.builder.timing import time_settings
    from lfgen.catalogs.gpus import find_gpu
    from lfgen.models.lengths import LengthModel
    from lfgen.models.time import throughput

    gpu = find_gpu(gpu_name)
    memory = estimate(str(model_dir), config, gpu.name, gpu.memory_gb, 1)
    total = memory.memory_gib["total"]
    shape = throughput(str(model_dir), gpu, time_settings(config, 1), LengthModel.fixed(cutoff))
    return {"est_total_gib": round(total, 3), "est_needed_gib": round(total - memory.memory_gib.get("releasable_cache", 0), 3),
            "est_tokens_per_s": round(shape.tokens_per_s, 1)}


def rows_for(case: dict[str, Any], gpu: str, stamp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case as a time_reference row and a memory_reference row."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from time_reference import split_of

    rid = f"gpucheck-{gpu.split()[0].lower()}-{stamp}-{case['model'].split('/')[-1].lower()}-{case['method']}-" \
          f"s{case['cutoff']}-b{case['micro']}"
    source = f"lfgen benchmarks/gpu_check.py on one {gpu}, {stamp}"
    shape = {"model": case["model"], "method": case["method"], "rank": case["rank"], "micro_batch": case["micro"],
             "seq_len": case["cutoff"], "gradient_checkpointing": case["gradient_checkpointing"]}
    time_row = {"id": rid, "source": source, "framework": "LlamaFactory (llamafactory-cli train), lfgen's config",
                "measured": "micro_batch x seq_len / the last tqdm seconds per step", "gpu": gpu, "num_gpus": 1,
                **shape, "targets": case["targets"], "packing": True, "gradient_accumulation": 1,
                "attention": case["attention"], "precision": case["precision"], "kbit_fp32_upcast": False, "compile": False,
                "tokens_per_s": case["tokens_per_s"], "split": split_of(rid)}
    memory_row = {"id": rid, "source": source, "split": "holdout", "framework": time_row["framework"], **shape,
                  "bits": 4 if case["method"] == "qlora" else None, "targets": case["targets"], "packing": False,
                  "padding": False, "attention": case["attention"], "precision": case["precision"], "gpus": f"1x {gpu}",
                  "measured": {k: v for k, v in (("process_gib", case["smi_gib"]), ("reserved_gib", case["reserved_gib"]),
                                                 ("allocated_gib", case["allocated_gib"])) if v is not None},
                  "number": "process: nvidia-smi memory.used over the run less before it; reserved/allocated: "
                            "LlamaFactory's RECORD_VRAM log"}
    return time_row, memory_row


def run_case(work: Path, model: str, method: str, cutoff: int, micro: int, args) -> dict[str, Any]:
    from lfgen.runs.parsing import peak_vram_gib

    tag = f"{model.split('/')[-1]}-{method}-s{cutoff}-b{micro}"
    run_dir = work / "runs" / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = work / "models" / model.split("/")[-1]
    if model == "tiny":
        from lfgen.tiny import make_model as tiny_model

        tiny_model(model_dir) if not (model_dir / "config.json").exists() else None
    else:
        make_model(model, model_dir, work / "models" / "tiny", "cuda")
    config = build_config(model_dir, work / "data", run_dir / "out", args.gpu, method, cutoff, micro, args.steps,
                          args.smoke)
    config_path = run_dir / "train.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    code, smi_gib, wall = train(config_path, run_dir / "train.log", args.case_timeout)
    log = run_dir / "out" / "trainer_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    step_s = steady_step_seconds(run_dir / "train.log")
    case = {"model": model, "method": method, "cutoff": cutoff, "micro": micro, "rank": config.get("lora_rank"),
            "targets": config.get("lora_target"), "gradient_checkpointing": not config.get("disable_gradient_checkpointing"),
            "attention": {"fa2": "fa2", "disabled": "eager"}.get(config.get("flash_attn"), "sdpa"),
            "precision": "bf16" if config.get("bf16") else "fp16" if config.get("fp16") else "fp32", "exit_code": code,
            "wall_s": round(wall, 1), "smi_gib": None if smi_gib is None else round(smi_gib, 3),
            "reserved_gib": peak_vram_gib(r.get("vram_reserved") for r in records),
            "allocated_gib": peak_vram_gib(r.get("vram_allocated") for r in records),
            "step_s": step_s, "tokens_per_s": round(micro * cutoff / step_s, 1) if step_s else None}
    case.update(estimates(config, model_dir, args.gpu or "T4", micro, cutoff))
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", help="the GPU's catalog name (H100, A100-80, ...): the estimates are for it")
    parser.add_argument("--out", default="gpu_check", help="output folder (refused if it holds results)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--budget", type=float, default=330.0, help="start no case after this many seconds")
    parser.add_argument("--case-timeout", type=float, default=120.0, help="stop a case that runs longer")
    parser.add_argument("--smoke", action="store_true", help="one tiny CPU run: checks the kit, measures a CPU")
    parser.add_argument("--force", action="store_true", help="overwrite --out's results")
    args = parser.parse_args(argv)
    if not args.smoke and not args.gpu:
        parser.error("--gpu NAME is needed on a GPU (the estimates are for it); --smoke checks the kit on a CPU")
    out = Path(args.out)
    if (out / "gpu_check.csv").exists() and not args.force:
        parser.error(f"{out}/gpu_check.csv exists; pass --force to overwrite or choose another --out")
    work = out / "work"
    from lfgen.tiny import make_model as tiny_model

    tiny_model(work / "models" / "tiny")  # also the tokenizer every random-weight model borrows
    make_data(work / "data", words=2200 if not args.smoke else 60, rows=max(64, 8 * args.steps))
    started, cases = time.monotonic(), []
    for model, method, cutoff, micro in (SMOKE if args.smoke else MATRIX):
        if time.monotonic() - started > args.budget:
            print(f"budget reached: {model} {method} s{cutoff} b{micro} not run", file=sys.stderr)
            continue
        case = run_case(work, model, method, cutoff, micro, args)
        cases.append(case)
        print(json.dumps(case), flush=True)
    stamp = dt.date.today().isoformat()
    with (out / "gpu_check.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(cases[0]))
        writer.writeheader()
        writer.writerows(cases)
    done = [c for c in cases if c["exit_code"] == 0 and c["tokens_per_s"]]
    label = args.gpu or "CPU (smoke: not for the reference files)"
    pairs = [rows_for(c, label, stamp) for c in done]
    (out / "time_rows.yaml").write_text(yaml.safe_dump([t for t, _ in pairs], sort_keys=False), encoding="utf-8")
    (out / "memory_rows.yaml").write_text(yaml.safe_dump([m for _, m in pairs if m["measured"]], sort_keys=False),
                                          encoding="utf-8")
    print(f"{len(done)} of {len(cases)} case(s) measured; {out}/gpu_check.csv, time_rows.yaml, memory_rows.yaml",
          file=sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
