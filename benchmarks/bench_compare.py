"""Benchmark of ``lfgen.results.compare``: N finished runs of 2,000 trainer_log.jsonl lines each.

    python benchmarks/bench_compare.py            # 1,000 runs, then 10,000 for the scaling check
    python benchmarks/bench_compare.py --quick    # 100, then 1,000

Targets: 1,000 runs in 3 s or less; 10x the runs in at most 11x the time. Every run directory is a
full LlamaFactory output_dir (trainer_log.jsonl, trainer_state.json with grad_norm, the results
files, adapter_config.json and the lfgen run YAML), written by tests/results/lf_files.py for a few
variant curves and copied, so the files are real and distinct. Times are medians over --repeats
calls with a warm page cache (the files were just written), as when a user re-runs compare.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lfgen.results.table import collect, compare, frame  # noqa: E402
from tests.results.lf_files import Curves, decay, write_run  # noqa: E402

RUNS_PER_EXPERIMENT = 10


def variants(lines: int, workdir: Path) -> list[Path]:
    """Eight template runs: healthy rank sweep members plus one of each pathology."""
    steps = lines - lines // 100  # about 1% of the lines are evals (eval_steps = 100 x logging_steps)
    healthy = [decay(steps, end=1.3 - r / 400, seed=r) for r in (16, 32, 64, 128)]
    overfit = decay(steps, end=0.3, tau=0.1, seed=5)
    spiky = decay(steps, seed=6)
    grad = [0.8 + 0.05 * math.sin(i) for i in range(steps)]
    grad_spike = list(grad)
    grad_spike[steps // 2] = 80.0
    shapes = [(c, grad, lambda s: 1.1 + math.exp(-s / 5000)) for c in healthy] + [
        (overfit, grad, lambda s: 1.0 + ((s - 8000) / 10000) ** 2),
        (spiky, grad_spike, lambda s: 1.2 + math.exp(-s / 5000)),
        ([2.5 + 0.02 * math.sin(i) for i in range(steps)], grad, lambda s: 2.5),
        ([1.5 + 0.3 * (-1) ** i for i in range(steps)], grad, lambda s: 1.6),
    ]
    out = []
    for k, (loss, norms, eval_curve) in enumerate(shapes):
        logging_steps = 10
        evals = {s: eval_curve(s) for s in range(100 * logging_steps, steps * logging_steps + 1, 100 * logging_steps)}
        rank = (16, 32, 64, 128)[k % 4]
        out.append(write_run(workdir / f"variant-{k}", Curves(loss, evals, grad_norm=norms, logging_steps=10),
                             config={"lora_rank": rank, "lora_alpha": 2 * rank, "seed": k}))
    return out


def populate(root: Path, count: int, templates: list[Path]) -> None:
    for i in range(count):
        target = root / f"exp-{i // RUNS_PER_EXPERIMENT:04d}" / "runs" / f"run-{i:05d}"
        target.mkdir(parents=True)
        for file in templates[i % len(templates)].iterdir():
            shutil.copyfile(file, target / file.name)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the reader processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(root: Path, repeats: int, workers: int | None) -> tuple[float, float, int]:
    """Median wall time and median CPU time of compare(root), and the rows it returned."""
    walls, cpus, rows = [], [], 0
    for _ in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds()
        # compare(root) is frame(collect(root)); collect is called directly only to pass --workers.
        rows = len(compare(root) if workers is None else frame(collect(root, workers=workers)))
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return statistics.median(walls), statistics.median(cpus), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 runs instead of 1,000 and 10,000")
    parser.add_argument("--runs", type=int, help="runs in the first measurement (default 1000, --quick 100)")
    parser.add_argument("--lines", type=int, default=2000, help="trainer_log.jsonl lines per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--workers", type=int, help="reader processes (default: one per CPU; 1 = no processes)")
    args = parser.parse_args()
    small = args.runs or (100 if args.quick else 1000)
    workdir = Path(tempfile.mkdtemp(prefix="lfgen-bench-", dir=args.dir))
    try:
        start = time.perf_counter()
        templates = variants(args.lines, workdir / "templates")
        populate(workdir / "small", small, templates)
        populate(workdir / "large", 10 * small, templates)
        os.sync()  # flush the new files now, not while a measurement runs
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; workers: {args.workers or 'auto'}")
        print(f"generated {small} + {10 * small} runs of {args.lines} log lines in "
              f"{time.perf_counter() - start:.1f} s under {workdir}")
        compare(workdir / "small")  # warm-up: imports (pandas, numpy) are not what is measured
        t_small, cpu_small, rows_small = timed(workdir / "small", args.repeats, args.workers)
        t_large, cpu_large, rows_large = timed(workdir / "large", args.repeats, args.workers)
        assert (rows_small, rows_large) == (small, 10 * small), (rows_small, rows_large)
        ratio = t_large / t_small
        for count, wall, cpu in ((small, t_small, cpu_small), (10 * small, t_large, cpu_large)):
            print(f"compare, {count:>6} runs: {wall:7.3f} s wall ({1000 * wall / count:.2f} ms/run), {cpu:7.3f} s CPU "
                  f"(medians of {args.repeats})")
        print(f"ratio 10x runs / 1x runs: {ratio:.2f}x wall, {cpu_large / cpu_small:.2f}x CPU (target <= 11x); "
              f"load average now {os.getloadavg()[0]:.2f}")
        if small == 1000:
            print(f"target 1,000 runs <= 3 s: {'met' if t_small <= 3.0 else 'MISSED'}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
