"""Startup of the config commands against `llamafactory-cli version`, measured in the same run.

    .venv/bin/python benchmarks/bench_startup.py [--runs 15]

Prints the median wall time of each command and its ratio to LlamaFactory's own startup.
The budget (issue #2): each lfgen command <= 0.3 s median on the 2-core dev machine and
>= 15x faster than `llamafactory-cli version`. Machines are noisy; the ratio is the robust figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "lfgen --help": [str(BIN / "lfgen"), "--help"],
    "lfgen presets": [str(BIN / "lfgen"), "presets"],
    "lfgen preset a800 --rank 64": [str(BIN / "lfgen"), "preset", "a800", "--rank", "64"],
}
BUDGET_S, MIN_RATIO = 0.3, 15.0


def wall(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--lf-runs", type=int, default=3)
    args = parser.parse_args()
    lf = shutil.which("llamafactory-cli", path=str(BIN)) or shutil.which("llamafactory-cli")
    if lf is None:
        sys.exit("llamafactory-cli not found: pip install -e '.[train]'")
    with tempfile.TemporaryDirectory() as cwd:  # no data/ here: the default job, as a new user runs it
        for argv in COMMANDS.values():  # warm the page cache before timing
            wall(argv, cwd)
        times = {name: [] for name in COMMANDS}
        lf_times = []
        # Interleave so drift in machine load hits every command alike.
        for i in range(args.runs):
            for name, argv in COMMANDS.items():
                times[name].append(wall(argv, cwd))
            if i < args.lf_runs:
                lf_times.append(wall([lf, "version"], cwd))
    lf_median = statistics.median(lf_times)
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'x faster than LF':>17}  budget")
    print(f"{'llamafactory-cli version':32} {lf_median:9.3f} {min(lf_times):7.3f} {1.0:17.1f}")
    ok = True
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = lf_median / median
        passed = median <= BUDGET_S and ratio >= MIN_RATIO
        ok &= passed
        print(f"{name:32} {median:9.3f} {min(samples):7.3f} {ratio:17.1f}  {'ok' if passed else 'OVER'}")
    print(f"(cpus: {os.cpu_count()}, runs: {args.runs}, llamafactory-cli runs: {args.lf_runs})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
