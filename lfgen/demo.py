"""``lfgen demo``: the whole loop on a tiny model, on the CPU, offline, in a few minutes.

Builds a tiny model, tokenizer and dataset locally (lfgen.tiny), lays out a 3-run rank sweep,
trains it with the runner, and writes the comparison and the HTML report. Run it again and it
resumes: finished runs are not trained twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from lfgen.builder.options import BuildOptions
from lfgen.layout import DATASET_INFO, MANIFEST

RANKS = ("4", "8", "16")
NAME = "demo-rank"
EVAL = {"max_samples": 4, "max_new_tokens": 16}  # lfgen eval of each run, kept quick: a few held-out rows


@dataclass
class DemoPaths:
    root: Path
    experiment: Path
    outputs: Path
    report: Path


def prepare(root: str | Path) -> DemoPaths:
    """The demo project: tiny model and data (made once) and the rank sweep (laid out once)."""
    from lfgen.experiments.make import make_sweep
    from lfgen.tiny import CPU_SETTINGS, make_dataset, make_model

    from lfgen.yamlio import check_can_write, make_parents

    root = check_can_write(Path(root).resolve(), "DIRECTORY")
    try:
        make_parents(root / "x")
    except OSError as exc:
        from lfgen.yamlio import cannot_write

        raise cannot_write(root, exc, "DIRECTORY") from None
    if not (root / "tiny-model" / "config.json").is_file():
        make_model(root / "tiny-model")
    if not (root / "data" / DATASET_INFO).is_file():
        make_dataset(root / "data", rows=80)
    paths = DemoPaths(root, root / "experiments" / NAME, root / "outputs" / NAME, root / "report.html")
    if not (paths.experiment / MANIFEST).is_file():
        # --gpu cpu: the demo trains on the CPU even on a machine with a GPU; the template comes from the tiny
        # model's config.json (qwen2 -> qwen)
        options = BuildOptions.parse(model="./tiny-model", gpu="cpu", dataset=["tiny_alpaca"], dataset_dir="data",
                                     set={**CPU_SETTINGS, "max_steps": 60, "learning_rate": 5.0e-3})
        with contextlib.chdir(root):  # the demo folder is the experiment's root: its paths are relative to it
            make_sweep("rank", list(RANKS), base="lightweight", options=options, name=NAME)
    return paths
