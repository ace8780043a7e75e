"""``lfgen demo``: the whole loop on a tiny model, on the CPU, offline, in a few minutes.

Builds a tiny model, tokenizer and a word-mapping dataset locally (lfgen.tiny), lays out a 3-run
learning-rate sweep of a full fine-tune, trains it with the runner, and writes the comparison and the
HTML report. The task is one the tiny model learns on the CPU in 40 steps at the highest rate and not
at the lowest, so the verdict names a real winner beyond noise (a LoRA of the random tiny model barely
moves its loss in that time: its embeddings, tied to the output, stay random). Run it again and it
resumes: finished runs are not trained twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from lfgen.builder.options import BuildOptions
from lfgen.layout import DATASET_INFO, MANIFEST
from lfgen.tiny import CPU_SETTINGS

RATES = ("1e-5", "1e-3", "1e-2")  # not learning, learning slowly, learning: the verdict names lr-1e-2
NAME = "demo-lr"
# 40 steps of 4 rows (160 of the 180 training rows), evaluated every 10 on the 20 held out
# (CPU_SETTINGS less the learning rate, which the sweep varies)
DEMO_SETTINGS = {**{k: v for k, v in CPU_SETTINGS.items() if k != "learning_rate"}, "max_steps": 40, "eval_steps": 10,
                 "save_steps": 20, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
EVAL = {"max_samples": 4, "max_new_tokens": 16}  # lfgen eval of each run, kept quick: a few held-out rows


@dataclass
class DemoPaths:
    root: Path
    experiment: Path
    outputs: Path
    report: Path


def prepare(root: str | Path) -> DemoPaths:
    """The demo project: tiny model and data (made once) and the learning-rate sweep (laid out once)."""
    from lfgen.experiments.make import make_sweep
    from lfgen.tiny import make_mapping_dataset, make_model

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
        make_mapping_dataset(root / "data")
    paths = DemoPaths(root, root / "experiments" / NAME, root / "outputs" / NAME, root / "report.html")
    if not (paths.experiment / MANIFEST).is_file():
        options = BuildOptions.parse(model="./tiny-model", template="qwen", dataset=["tiny_mapping"], dataset_dir="data",
                                     precision="fp32", method="full", set=DEMO_SETTINGS)
        with contextlib.chdir(root):  # the demo folder is the experiment's root: its paths are relative to it
            make_sweep("lr", list(RATES), base="auto", options=options, name=NAME)
    return paths
