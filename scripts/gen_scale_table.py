"""The scale table of docs/rules.md (issue 20): for each scenario, the key values lfgen wrote before the scale rules
(main at 66cb9c2) and after, beside LlamaFactory 0.9.5's closest example.

`python scripts/gen_rules_doc.py` writes it into docs/rules.md (tests/test_docs.py keeps it current). The "before" cells
were recorded once from the earlier code and are kept in scripts/scale_table_before.json:

    git archive 66cb9c2 | tar -x -C /tmp/lfgen-66cb9c2
    PYTHONPATH=/tmp/lfgen-66cb9c2 python scripts/gen_scale_table.py --record-before scripts/scale_table_before.json

The cells come from ``row()``, which uses only what both versions have (build, BuildOptions, the config, warnings and
the estimate); "after" also asks R-HW-FIT whether `lfgen preset` refuses the config.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "fixtures" / "llamafactory_examples" / "examples"
BEFORE = ROOT / "scripts" / "scale_table_before.json"
BASE_COMMIT = "66cb9c2"

QWEN7, LLAMA70 = "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"
# id -> (what it shows, preset, options, LlamaFactory's closest example)
SCENARIOS = {
    "1m-rows": ("7B on one A100-80, 1,000,000 rows", "auto", {"model": QWEN7, "gpu": "A100-80", "samples": 1_000_000},
                "train_lora/qwen3_lora_sft.yaml"),
    "200-rows": ("7B on one A100-80, 200 rows", "auto", {"model": QWEN7, "gpu": "A100-80", "samples": 200},
                 "train_lora/qwen3_lora_sft.yaml"),
    "5k-rows": ("7B on one A100-80, 5,000 rows", "auto", {"model": QWEN7, "gpu": "A100-80", "samples": 5000},
                "train_lora/qwen3_lora_sft.yaml"),
    "auto-4090": ("auto, 7B on an RTX 4090, 20,000 rows", "auto", {"model": QWEN7, "gpu": "4090", "samples": 20_000},
                  "train_lora/qwen3_lora_sft.yaml"),
    "large-rank-4090": ("large-rank, 7B on an RTX 4090", "large-rank", {"model": QWEN7, "gpu": "4090",
                                                                       "samples": 20_000},
                        "train_lora/qwen3_lora_sft.yaml"),
    "32b-8xh100": ("a800, 32B on 8 x H100", "a800", {"model": "Qwen/Qwen2.5-32B-Instruct", "gpu": "H100",
                                                      "num_gpus": 8, "samples": 20_000},
                   "train_lora/qwen3_lora_sft_ds3.yaml"),
    "full-8xh100": ("full fine-tune, 7B on 8 x H100", "auto", {"model": QWEN7, "gpu": "H100", "num_gpus": 8,
                                                                "method": "full", "samples": 20_000},
                    "train_full/qwen3_full_sft.yaml"),
    "qlora-t4": ("a800 QLoRA, 7B on a T4", "a800", {"model": QWEN7, "gpu": "T4", "quant": 4, "samples": 5000},
                 "train_qlora/qwen3_lora_sft_otfq.yaml"),
    "0.5b-t4": ("auto, 0.5B on a T4", "auto", {"model": "Qwen/Qwen2.5-0.5B-Instruct", "gpu": "T4", "samples": 5000},
                "train_lora/qwen3_lora_sft.yaml"),
    "70b-h100": ("auto QLoRA, 70B on one H100", "auto", {"model": LLAMA70, "gpu": "H100", "quant": 4,
                                                         "samples": 20_000},
                 "train_qlora/qwen3_lora_sft_otfq.yaml"),
    "70b-2xa100": ("auto QLoRA, 70B on 2 x A100-80", "auto", {"model": LLAMA70, "gpu": "A100-80", "num_gpus": 2,
                                                              "quant": 4, "samples": 20_000},
                   "train_qlora/qwen3_lora_sft_otfq.yaml"),
    "mistral-3090": ("auto, Mistral-7B-v0.1 (base) at cutoff 4096 on an RTX 3090", "auto",
                     {"model": "mistralai/Mistral-7B-v0.1", "gpu": "3090", "cutoff_len": 4096, "samples": 5000},
                     "train_lora/qwen3_lora_sft.yaml"),
    "llama-base": ("a800, Llama-3.1-8B (base) on an A100-80", "a800", {"model": "meta-llama/Llama-3.1-8B",
                                                                         "gpu": "A100-80", "samples": 5000},
                   "train_lora/qwen3_lora_sft.yaml"),
    "gemma2": ("auto, Gemma-2-9B-it on an A100-80", "auto", {"model": "google/gemma-2-9b-it", "gpu": "A100-80",
                                                            "samples": 5000},
               "train_lora/qwen3_lora_sft.yaml"),
    "cpu-tiny": ("lightweight, the tiny local model, no --gpu on a machine without one", "lightweight",
                 {"model": "./tiny-model", "samples": 80}, "train_lora/qwen3_lora_sft.yaml"),
}
# The tiny model's config.json (lfgen.tiny.make_model's, without weights: a build reads nothing else).
TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1034,
        "max_position_embeddings": 512, "tie_word_embeddings": True, "dtype": "float32"}
CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _rate(value: float) -> str:
    """A learning rate as LlamaFactory's examples write it: 7.5e-5."""
    mantissa, exponent = f"{float(value):.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _steps(config: dict, samples: int, gpus: int) -> int:
    """Optimizer steps as the Trainer counts them (val_size a share or a row count)."""
    val = config.get("val_size") or 0
    held = math.ceil(val * samples) if 0 < val < 1 else int(val)
    batches = math.ceil(max(1, samples - held) / (config["per_device_train_batch_size"] * gpus))
    per_epoch = max(1, math.ceil(batches / config["gradient_accumulation_steps"]))
    return math.ceil(float(config.get("num_train_epochs", 3.0)) * per_epoch)


def _cell(result, samples: int, gpus: int, refused: str) -> str:
    c = result.config
    total = _steps(c, samples, gpus)
    parts = [f"{c['per_device_train_batch_size']} x {c['gradient_accumulation_steps']}" + (f" x {gpus}" if gpus > 1
                                                                                            else ""),
             f"lr {_rate(c['learning_rate'])}", f"{c.get('num_train_epochs', 3.0):g} ep",
             f"warmup {c.get('warmup_ratio', 0):g} ({math.ceil(c.get('warmup_ratio', 0) * total):,} steps)"]
    if c.get("eval_strategy", "no") != "no":
        every = int(c.get("eval_steps", 500))
        parts.append(f"val_size {c.get('val_size')}, eval every {every:,} ({total // every:,}x)")
    parts.append(f"save {c.get('save_steps')}")
    precision = "bf16" if c.get("bf16") else "fp16" if c.get("fp16") else "neither bf16 nor fp16"
    parts.append(precision + (", use_cpu" if c.get("use_cpu") else ""))
    parts.append(f"attn {c.get('flash_attn', 'auto')}")
    for key, label in (("lora_rank", "rank"), ("quantization_bit", "4-bit"), ("cutoff_len", "cutoff"),
                       ("template", "template")):
        if key in c:
            parts.append(f"{label} {c[key]}" if key != "quantization_bit" else label)
    if c.get("deepspeed"):
        parts.append(f"deepspeed {Path(str(c['deepspeed'])).name}")
    if c.get("ddp_timeout"):
        parts.append(f"ddp_timeout {c['ddp_timeout']}, {c.get('preprocessing_num_workers')}/"
                     f"{c.get('dataloader_num_workers')} workers")
    if c.get("disable_gradient_checkpointing") is True:
        parts.append("checkpointing off")
    flagged = [w.split(":", 1)[0] for w in result.warnings if w.startswith(("R-TEMPLATE-BASE", "R-EVAL-SIZE",
                                                                            "R-HW-ATTN", "R-HW-CPU", "LF-TEMPLATE"))]
    if flagged:
        parts.append("warns " + ", ".join(dict.fromkeys(flagged)))
    estimate = result.estimate
    if refused:
        parts.append(f"**exit 1**: {refused}")
    elif estimate is not None:
        memory = estimate.memory_gib
        needed = memory.get("calibrated_total", memory["total"]) - memory.get("releasable_cache", 0.0)
        parts.append(f"**{needed:.1f} GiB, {'fits' if estimate.fits else 'does NOT fit, exit 0'}**")
    return "; ".join(parts)


def _refusal(result) -> str:
    """What R-HW-FIT says of the build (only in the code that has it): the cheapest fix, shortened."""
    try:
        from lfgen.builder.fit_rules import require_fit
    except ImportError:
        return ""
    from lfgen.errors import InputError

    try:
        require_fit(result)
    except InputError as exc:
        return str(exc).split("; ")[1].split(" (~")[0] if "cheapest fix" in str(exc) else str(exc)
    return ""


def row(key: str) -> str:
    """One scenario's cell for the lfgen on sys.path, built in a scratch folder (no data/ there)."""
    from lfgen import BuildOptions, build

    _, preset, options, _ = SCENARIOS[key]
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        (Path(scratch) / "tiny-model").mkdir()
        (Path(scratch) / "tiny-model" / "config.json").write_text(json.dumps(TINY), encoding="utf-8")
        (Path(scratch) / "tiny-model" / "chat_template.jinja").write_text(CHAT, encoding="utf-8")
        result = build(preset, BuildOptions.parse(**options))
        return _cell(result, options["samples"], options.get("num_gpus", 1), _refusal(result))


def _example(path: str) -> str:
    import yaml

    c = yaml.safe_load((EXAMPLES / path).read_text(encoding="utf-8"))
    parts = [f"`{path}`: {c['per_device_train_batch_size']} x {c['gradient_accumulation_steps']}",
             f"lr {_rate(c['learning_rate'])}", f"{c['num_train_epochs']:g} ep", f"warmup {c['warmup_ratio']:g}",
             "no eval" if "val_size" not in c else f"val_size {c['val_size']}"]
    parts += [f"{k} {c[k]}" for k in ("quantization_bit", "deepspeed", "ddp_timeout", "lora_rank") if k in c]
    return "; ".join(parts)


def _after() -> dict[str, str]:
    """The cells of the code in this tree, as on a CPU-only CI machine without flash-attn, liger-kernel or deepspeed."""
    from lfgen.catalogs import machine

    saved, env = machine.installed, os.environ.get(machine.GPU_ENV)
    machine.installed = lambda package: False
    os.environ[machine.GPU_ENV] = "cpu"
    try:
        return {key: row(key) for key in SCENARIOS}
    finally:
        machine.installed = saved
        if env is None:
            os.environ.pop(machine.GPU_ENV, None)
        else:
            os.environ[machine.GPU_ENV] = env


def render() -> str:
    before = json.loads(BEFORE.read_text(encoding="utf-8"))
    after = _after()
    lines = [
        "\n## The scale table (issue 20)\n\n",
        f"Each row is `lfgen preset PRESET` with the options named, before the scale rules (main at {BASE_COMMIT}) and "
        "after, beside LlamaFactory 0.9.5's closest example. Batch is micro x accumulation (x GPUs); warmup in optimizer "
        "steps; evaluations counted as the Trainer runs them; the verdict is the memory that must fit and whether "
        "`lfgen preset` refuses the config (exit 1, naming the cheapest fix). After: as on a CPU-only machine without "
        "flash-attn, liger-kernel or deepspeed, so fa2 and Liger are not written (R-HW-ATTN, R-HW-THROUGHPUT). "
        "Generated by `scripts/gen_scale_table.py` (its docstring says how the before cells were recorded); "
        "tests/test_docs.py keeps it current.\n\n",
        "| scenario | before | after | LlamaFactory's example |\n|---|---|---|---|\n",
    ]
    for key, (label, preset, options, example) in SCENARIOS.items():
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
        lines.append(f"| {label} (`{preset} {flags}`) | {before[key]} | {after[key]} | {_example(example)} |\n")
    return "".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--record-before":
        cells = {key: row(key) for key in SCENARIOS}
        Path(sys.argv[2]).write_text(json.dumps(cells, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {sys.argv[2]} from lfgen at {__import__('lfgen').__file__}")
    else:
        print(render())
