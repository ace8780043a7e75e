"""Write docs/rules.md from presets/rules.yaml (the rule registry): `python scripts/gen_rules_doc.py`.

tests/test_docs.py fails when docs/rules.md and the registry differ.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lfgen.catalogs.rules import registry  # noqa: E402

INTRO = """# Rule reference

Every value lfgen writes names the rule that chose it (the note after each value in a generated
YAML, and the `rule` of each decision in `lfgen explain --json`). This page lists every rule id,
the source document it comes from (`../shared/seeds/`, digested in `RULES.md`), what the source
says, and what lfgen does with it. It is generated from `presets/rules.yaml`, where the numbers
(batch tiers, data-size bands) live; edit that file and run `python scripts/gen_rules_doc.py`.

## Where the sources disagree, and what lfgen picked

| question | seeds say | lfgen's default | how to get the other |
|---|---|---|---|
| LoRA dropout | seed 002: 0.1 in general, by data size 0.0-0.2; seed 003: 0.0 by default; seed 004: 0.3-0.5 on small data | seed 002's bands (the presets come from seed 002); explain shows seed 003's 0.0 as the alternative | `--dropout 0` |
| rank for the data size | seed 002: bands 16-32 / 32-64 / 64-128; seed 003: start at 64, never above 64 under 1K samples; seed 004: start at 8 | the top of seed 002's band (auto preset); named presets keep their rank and warn | `--rank N` |
| batch on an 80 GB GPU | seed 002 "总结": 4 x 8; seed 002 "显存 vs Batch Size": 8 x 4 | the largest micro-batch the estimate fits with `--gpu A800` (8 x 4 by the tier without a known model); with no GPU named, the GPU seen here, or a CPU run (2 x 16, R-HW-CPU) | `--set per_device_train_batch_size=...` |
| epochs for the data size | seed 002: ranges (5-10 under 5K samples ...; 1-2 above 50K) | the low end of each range (1 above 50K, R-DATA-LARGE); the eval split tells when to stop | `--epochs N` |
| warmup on large data | seed 002: 0.1-0.2 for large data | 0.03 and at most 500 steps above 50K rows (R-DATA-LARGE, QLoRA's 0.03) | `--set warmup_ratio=0.1` |
| the eval split | seed 002's skeleton: val_size 0.05, eval_steps 200, at any size | at most 1,000 rows, 5-20 evaluations under a tenth of the training time (R-EVAL-SIZE) | `--set val_size=0.05 --set eval_steps=200` |
| precision on a GPU without bf16 | seed 001: fp32 after fp16 went NaN | fp16 mixed precision (a loss scaler, fp32 trainable weights): LlamaFactory 0.9.5 has no fp32 training; with both flags off it trains in the checkpoint's half dtype unscaled (R-HW-FP16-AMP) | `--precision fp32` |
| gradient checkpointing | seed 002 writes `gradient_checkpointing: true` | LlamaFactory's own `disable_gradient_checkpointing: false` (it enables checkpointing itself) | `--set disable_gradient_checkpointing=true` to turn it off |
| LoRA bias | seed 000's schemes 2 and 3 ask for `lora_only` | not written: LlamaFactory has no LoRA bias option; a warning says so | - |
| LoRA learning rate | seeds 001, 002, 004: 2e-4 at any rank (1e-4 to 5e-4) | R-LR-RANK x R-LR-SIZE: the model's best rate at alpha 32 x 32 / alpha (7.5e-5 for a800 on a 7B model, 3e-4 for lightweight); the seeds' 2e-4 is the alternative explain shows | `--lr 2e-4` |
| the rules of other shapes | the seeds describe LoRA SFT only | each shape (`--stage`, `--method`) has its own rate, keys, memory terms and data kind; the rules whose premise does not hold are listed once by explain ([shapes.md](shapes.md)) | - |

## Rules
"""


def _table(rows: list[dict], first: str | None = None) -> str:
    """A markdown table of dict rows (a None cell reads "open"); *first* names a leading key column."""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("open" if r.get(c) is None and c != first else str(r.get(c, "")) for c in cols) + " |"
              for r in rows]
    return "\n" + "\n".join(lines) + "\n"


def _scale_table() -> str:
    """docs/rules.md's closing table (issue 20): scripts/gen_scale_table.py, loaded from beside this script."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_scale_table", ROOT / "scripts" / "gen_scale_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render()


def render() -> str:
    parts = [INTRO]
    for rule in registry().values():
        seeds = ", ".join(f"seed {s}" for s in rule.seeds) or (
            "beyond the seeds (RULES.md §7): the published sources below" if rule.sources else "lfgen / LlamaFactory facts")
        parts.append(f"\n### {rule.id}: {rule.title}\n\n- **Source:** {seeds}\n")
        parts.extend(f"- **Published source:** {source}\n" for source in rule.sources)
        parts.append(f"- **The source says:** {rule.says}\n- **lfgen:** {rule.lfgen}\n")
        extra = rule.tables
        for name in ("tiers", "bands", "sizes"):
            if name in extra:
                parts.append(_table(extra[name]))
        for name in ("rates", "betas"):  # keyed by stage
            if name in extra:
                parts.append(_table([{"stage": stage, **row} for stage, row in extra[name].items()], first="stage"))
    parts.append(_scale_table())
    return "".join(parts)


if __name__ == "__main__":
    out = ROOT / "docs" / "rules.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
