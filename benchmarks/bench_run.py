"""`lfgen run` on one tiny config against bare `llamafactory-cli train` on the same config, same run.

    .venv/bin/python benchmarks/bench_run.py [--repeats 3] [--steps 150]

Builds a tiny model and dataset locally (no network), then alternates the two commands, each on a
fresh copy of the config with its own output_dir, and prints the median wall times and lfgen's
overhead. Budget (issue #5): at most 3%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    from lfgen import BuildOptions, build, render_build
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    bare, ours = [], []
    with tempfile.TemporaryDirectory(prefix="lfgen-bench-") as tmp:
        root = Path(tmp)
        make_model(root / "tiny-model")
        make_dataset(root / "data", rows=200)
        settings = {**CPU_SETTINGS, "max_steps": args.steps, "save_steps": args.steps, "eval_steps": args.steps,
                    "logging_steps": 5}
        os.chdir(root)
        for i in range(args.repeats):
            for kind, times in (("bare", bare), ("lfgen", ours)):
                options = BuildOptions.parse(model="./tiny-model", template="qwen", dataset=["tiny_alpaca"],
                                             dataset_dir="data", precision="fp32", output_dir=f"out/{kind}-{i}",
                                             set=settings)
                config = root / f"{kind}-{i}.yaml"
                config.write_text(render_build(build("lightweight", options)))
                argv = ([str(BIN / "llamafactory-cli"), "train", str(config)] if kind == "bare" else
                        [str(BIN / "lfgen"), "run", str(config), "--quiet"])
                start = time.perf_counter()
                subprocess.run(argv, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
                print(f"  {kind:5} #{i}: {times[-1]:.2f} s", flush=True)
    b, o = statistics.median(bare), statistics.median(ours)
    overhead = (o - b) / b
    print(f"bare llamafactory-cli train: {b:.2f} s median; lfgen run: {o:.2f} s median; "
          f"overhead {overhead:+.1%} (budget 3%: {'ok' if overhead <= 0.03 else 'OVER'})")
    return 0 if overhead <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
