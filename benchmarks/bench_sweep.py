"""Expanding and writing a 1,000-run grid: `lfgen sweep grid` against a plain yaml.safe_dump baseline.

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 3]

Budget (issue #4): at most 2 s for 1,000 runs on the 2-core dev machine. The baseline, measured
in the same run, dumps the same 1,000 configs with yaml.safe_dump into files: what a hand-written
script would do, without lfgen's rules, validation, recipe headers and manifest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

GRID = ["lora_rank=8,16,32,64,128", "learning_rate=1e-4,1.5e-4,2e-4,2.5e-4,3e-4,3.5e-4,4e-4,4.5e-4,5e-4,6e-4",
        "lora_dropout=0.0,0.05,0.1,0.2", "warmup_ratio=0.03,0.05,0.08,0.1,0.15"]  # 5 x 10 x 4 x 5 = 1,000
BUDGET_S = 2.0


def lfgen_grid(workdir: Path) -> float:
    from lfgen.experiments.make import make_sweep

    os.chdir(workdir)
    start = time.perf_counter()
    experiment = make_sweep("grid", GRID, name="bench", force=True)
    elapsed = time.perf_counter() - start
    assert len(experiment.manifest.runs) == 1000
    return elapsed


def baseline(workdir: Path) -> float:
    import itertools

    import yaml

    from lfgen import build

    base = build("a800").config
    out = workdir / "baseline"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    dims = [(item.split("=")[0], [yaml.safe_load(v) for v in item.split("=")[1].split(",")]) for item in GRID]
    for index, combo in enumerate(itertools.product(*(values for _, values in dims))):
        config = {**base, **{key: value for (key, _), value in zip(dims, combo)}}
        (out / f"{index}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            ours.append(lfgen_grid(Path(tmp)))
            theirs.append(baseline(Path(tmp)))
    median, base = statistics.median(ours), statistics.median(theirs)
    print(f"lfgen sweep grid, 1,000 runs : {median:.3f} s median ({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"yaml.safe_dump baseline      : {base:.3f} s median ({', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"ratio lfgen / baseline       : {median / base:.2f}x; budget {BUDGET_S:.1f} s: "
          f"{'ok' if median <= BUDGET_S else 'OVER'}")
    return 0 if median <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
