"""How busy lfgen tune keeps its GPU slots: the same study on two versions of lfgen, one command.

    .venv/bin/python benchmarks/bench_tune_slots.py [--slots 4] [--trials 16] [--step 2] [--before abab2dd]

The stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py, evals mode: 8 steps of --step seconds, an
eval loss after each that grows with the distance of log10(learning_rate) from -3) trains every trial, so only
lfgen's own scheduling is measured; a fake nvidia-smi gives --slots GPUs. Both versions tune with --sampler random
--seed 0 --pruner asha over the same space, so they train the same trials and ASHA prunes the far ones. --before is
a git revision of this repository (extracted with git archive) or a folder holding another lfgen checkout.

Each trial's process is taken from the moment lfgen started it (its ``started`` in state.sqlite, written as the
process is spawned) to the moment it ended (the stand-in's own record: finished, or stopped by lfgen's SIGTERM when
pruned); the gaps between them are lfgen's, per GPU slot:
- idle while trials remained: the share of slot time between the first trial's start and the last trial's start
  during which a slot had no process (what a scheduler that refills a slot at once keeps near zero);
- idle overall: the same up to the last trial's end (it adds the drain at the end, which no scheduler avoids);
- the refill gap: from a process's end to the start of the next one in its slot, mean and largest (what lfgen
  spends between two trials: noticing the end, telling and asking Optuna, laying the trial out, starting it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAND_IN = REPO / "tests" / "training" / "fake_llamafactory_cli.py"
SPACE = "lora_rank: {choices: [4, 8, 16]}\nlearning_rate: {low: 1.0e-5, high: 1.0e-1, log: true}\n"


def checkout(before: str, into: Path) -> Path:
    """The lfgen code of *before*: a folder as given, else ``git archive`` of that revision."""
    if Path(before).is_dir():
        return Path(before).resolve()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", before], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def project(folder: Path, slots: int) -> dict[str, str]:
    """A project with the stand-in and a fake nvidia-smi first on PATH; the environment to run lfgen in."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "llamafactory-cli").write_text(f"#!{sys.executable}\n" + STAND_IN.read_text())
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(slots)))
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (folder / "space.yaml").write_text(SPACE)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LF_RECORD": str(folder / "calls.jsonl")}


def study(code: Path, folder: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    gpus = ",".join(map(str, range(args.slots)))
    sets = [arg for key, value in {"max_steps": 8, "eval_steps": 1, "eval_strategy": "steps", "val_size": 0.1}.items()
            for arg in ("--set", f"{key}={value}")]
    environ = {**os.environ, **env, "PYTHONPATH": str(code),
               "FAKE_LF_MODES": json.dumps({"trial": f"evals:{args.step}"})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lfgen", "tune", "t", "--base", "a800", "--model", "fake/model",
                           "--gpu", "A800", *sets, "--space", "space.yaml", "--trials", str(args.trials), "--sampler",
                           "random", "--seed", "0", "--pruner", "asha", "--gpus", gpus], cwd=folder, env=environ,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lfgen tune ({code}) failed:\n{done.stderr[-3000:]}")
    calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]
    ends = {Path(c["argv"][2]).parent.name: c["end"] for c in calls if "finished" in c}
    with sqlite3.connect(folder / "experiments" / "t" / "state.sqlite") as db:
        started = db.execute("SELECT name, gpus, started, attempts FROM runs").fetchall()
    assert all(attempts == 1 for *_, attempts in started), "a trial was started twice: the measure assumes once"
    return {"wall": wall, "processes": [(gpus, start, ends[name]) for name, gpus, start, _ in started],
            "pruned": sum(1 for c in calls if c.get("stopped")), "stdout": done.stdout}


def idle(processes: list[tuple[str, float, float]], slots: int, until: str) -> float:
    """The share of slot time without a process, from the first start to the last start (or end)."""
    first = min(start for _, start, _ in processes)
    last = max(start for _, start, _ in processes) if until == "start" else max(end for _, _, end in processes)
    busy = sum(max(0.0, min(end, last) - max(start, first)) for _, start, end in processes)
    return 1 - busy / (slots * (last - first)) if last > first else 0.0


def gaps(processes: list[tuple[str, float, float]]) -> list[float]:
    """Per slot, the time from each process's end to the next one's start."""
    found = []
    for slot in {gpus for gpus, _, _ in processes}:
        ordered = sorted((start, end) for gpus, start, end in processes if gpus == slot)
        found += [later[0] - earlier[1] for earlier, later in zip(ordered, ordered[1:])]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--step", type=float, default=2.0, help="seconds per training step of the stand-in")
    parser.add_argument("--before", default="abab2dd", help="a git revision or a folder with lfgen's code")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"before": checkout(args.before, Path(tmp) / "before-code"), "after": REPO}
        results = {}
        for label, code in versions.items():
            folder = Path(tmp) / label
            results[label] = study(code, folder, project(folder, args.slots), args)
            shutil.rmtree(folder / "outputs", ignore_errors=True)
    print(f"{args.trials} trials on {args.slots} slots, ASHA, 8 steps of {args.step:g} s each (stand-in "
          f"llamafactory-cli); before = {args.before}, after = this tree")
    print(f"{'':>7} {'wall s':>7} {'pruned':>7} {'idle while trials remained':>27} {'idle overall':>13} "
          f"{'refill gap s (mean, max)':>25}")
    for label, result in results.items():
        processes = result["processes"]
        between = gaps(processes)
        print(f"{label:>7} {result['wall']:7.1f} {result['pruned']:7d} "
              f"{idle(processes, args.slots, 'start'):27.1%} {idle(processes, args.slots, 'end'):13.1%} "
              f"{sum(between) / max(1, len(between)):17.2f}, {max(between, default=0):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
