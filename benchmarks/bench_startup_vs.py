"""Startup of this tree against an earlier revision, in one run: ``python benchmarks/bench_startup_vs.py REV``.

Both trees run under the same interpreter (this venv), alternating, so machine noise hits both alike; the
figure is the ratio of medians (after / before). The old tree is ``git archive REV`` in a temporary folder.
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

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["presets"], ["preset", "a800", "--rank", "64"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare with (e.g. a commit before a change)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfgen-bench-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        trees = {"before": tmp, "after": str(ROOT)}
        times: dict[tuple[str, int], list[float]] = {(t, i): [] for t in trees for i in range(len(COMMANDS))}
        with tempfile.TemporaryDirectory() as cwd:
            for _ in range(args.runs):
                for i, command in enumerate(COMMANDS):
                    for tree, path in trees.items():
                        env = {**os.environ, "PYTHONPATH": path, "PYDANTIC_DISABLE_PLUGINS": "1"}
                        start = time.perf_counter()
                        subprocess.run([sys.executable, "-m", "lfgen", *command], env=env, cwd=cwd,
                                       capture_output=True, check=True)
                        times[(tree, i)].append(time.perf_counter() - start)
    print(f"{'command':32} {'before s':>9} {'after s':>8} {'after/before':>13}   ({args.rev}, {args.runs} runs)")
    for i, command in enumerate(COMMANDS):
        before, after = (statistics.median(times[(t, i)]) for t in ("before", "after"))
        print(f"{'lfgen ' + ' '.join(command):32} {before:9.3f} {after:8.3f} {after / before:13.2f}")


if __name__ == "__main__":
    main()
