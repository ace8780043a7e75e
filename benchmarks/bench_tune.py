"""Pruning on and off over the SAME trials: `lfgen tune` with ASHA against `--pruner none`, one command.

    .venv/bin/python benchmarks/bench_tune.py [--trials 16] [--steps 8] [--keep DIR]

Both studies use `--sampler random --seed 0`: Optuna's RandomSampler draws the same parameters for trial i
whatever the earlier trials' outcomes (TPE would not: a pruned trial changes what it proposes next), so the two
studies train the same configurations and differ only in the pruner. The task really learns in a few steps:
a local Qwen2 (hidden 512, 4 layers, 12 M parameters, lfgen.tiny) from random weights on lfgen.tiny's
arithmetic-and-colours dataset, learning rate over three decades (1e-5 to 1e-2, where 1e-5 barely moves and 1e-2
learns fastest or diverges) and the LoRA rank 4/8/16, eval every step. Printed: optimizer steps used, wall time,
trials pruned, and whether both studies name the same best configuration. Goal (issue #12): at most 50 % of the
steps for the same best.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = "lora_rank: {choices: [4, 8, 16]}\nlearning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\n"


def lfgen(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this venv's llamafactory-cli
    return subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=project, capture_output=True, text=True, check=False,
                          env=env)


def study(project: Path, name: str, pruner: str, trials: int, steps: int) -> dict:
    from lfgen.tiny import CPU_SETTINGS
    from lfgen.runs.study import load_rows

    settings = {**CPU_SETTINGS, "max_steps": steps, "eval_steps": 1, "logging_steps": 1, "save_steps": 1000,
                "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "val_size": 0.2,
                "eval_strategy": "steps"}
    del settings["learning_rate"]  # the space searches it
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    start = time.perf_counter()
    done = lfgen(project, "tune", name, "--base", "lightweight", "--model", "./model", "--gpu", "cpu", "--dataset",
                 "tiny_alpaca", "--dataset-dir", "data", *sets,
                 "--space", "space.yaml", "--trials", str(trials), "--sampler", "random", "--pruner", pruner,
                 "--seed", "0")
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"lfgen tune {name} failed:\n{done.stderr[-4000:]}")
    rows = load_rows(project / "experiments" / name)
    complete = [r for r in rows if r["state"] == "complete"]
    best = min(complete, key=lambda r: r["value"]) if complete else None
    return {"wall": wall, "rows": rows, "steps": sum(r["steps"] or 0 for r in rows), "best": best,
            "pruned": sum(r["state"] == "pruned" for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    from lfgen.tiny import make_dataset, make_model

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(args.keep or tmp)
        project.mkdir(parents=True, exist_ok=True)
        make_model(project / "model", hidden=512, layers=4)
        make_dataset(project / "data", rows=80)
        (project / "space.yaml").write_text(SPACE)
        off = study(project, "full", "none", args.trials, args.steps)
        on = study(project, "asha", "asha", args.trials, args.steps)
    same_params = [a["params"] for a in off["rows"]] == [b["params"] for b in on["rows"]]
    print(f"{args.trials} trials x {args.steps} steps, eval every step, random sampler seed 0 "
          f"(same parameters in both studies: {'yes' if same_params else 'NO'})")
    print(f"{'trial':>6} {'rank':>4} {'lr':>9} {'no pruning':>18} {'asha':>24}")
    for a, b in zip(off["rows"], on["rows"]):
        value = f"{b['value']:.4f}" if b["value"] is not None else "-"
        print(f"{a['number']:>6} {a['params'].get('lora_rank'):>4} {a['params'].get('learning_rate'):>9.2e} "
              f"{a['value']:>9.4f} {a['steps']:>3} st   {b['state']:>8} {value:>7} {b['steps']:>3} st")
    for label, result in (("no pruning", off), ("asha", on)):
        best = result["best"]
        print(f"{label:>10}: {result['steps']:>4} of {args.trials * args.steps} steps, {result['wall']:6.1f} s wall, "
              f"{result['pruned']} pruned, best trial {best['number']} ({best['params']}, eval_loss {best['value']:.4f})")
    fraction = on["steps"] / max(1, off["steps"])
    same_best = on["best"]["params"] == off["best"]["params"]
    print(f"asha used {fraction:.0%} of the steps and {on['wall'] / off['wall']:.0%} of the wall time; "
          f"same best configuration: {'yes' if same_best else 'no'}; goal <= 50 % of the steps for the same best: "
          f"{'met' if same_best and fraction <= 0.5 else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
