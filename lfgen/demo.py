"""``lfgen demo``: the whole loop on a tiny model, on the CPU, offline, in a few minutes.

Builds a tiny model, tokenizer and a word-mapping dataset locally (lfgen.tiny), lays out a 3-run
learning-rate sweep of a full fine-tune, trains it with the runner, and writes the comparison and the
HTML report. The task is one the tiny model learns on the CPU in 40 steps at the highest rate and not
at the lowest, so the verdict names a real winner beyond noise (a LoRA of the random tiny model barely
moves its loss in that time: its embeddings, tied to the output, stay random). Run it again and it
resumes: finished runs are not trained twice.

``lfgen demo --vlm``: the same loop on a tiny Qwen2-VL with generated pictures and captions (lfgen.tiny_vlm):
seed 001's caption preset, the data's images choosing image_max_pixels and the cutoff (R-VLM-PIXELS,
R-DATA-CUTOFF), two runs (the language model only, and seed 000's two towers: ``freeze_vision_tower: false``),
each captioning its held-out pictures (BLEU, ROUGE, CIDEr-D), and a report with the pictures beside the answers.
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
VLM_NAME = "demo-vlm"
VLM_ROWS = 16  # pictures; val_size 0.25 holds 4 out to caption
# The CPU's share of tiny_vlm.CPU_SETTINGS: image_max_pixels and cutoff_len are left to the rules (the data's
# pictures decide them), and enough steps for a loss curve.
VLM_SETTINGS = {"max_steps": 60, "logging_steps": 1, "learning_rate": 1.0e-2, "preprocessing_num_workers": 1,
                "dataloader_num_workers": 0, "overwrite_cache": True, "report_to": "none", "val_size": 0.25,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}


@dataclass
class DemoPaths:
    root: Path
    experiment: Path
    outputs: Path
    report: Path


def _root(root: str | Path) -> Path:
    from lfgen.yamlio import check_can_write, make_parents

    root = check_can_write(Path(root).resolve(), "DIRECTORY")
    try:
        make_parents(root / "x")
    except OSError as exc:
        from lfgen.yamlio import cannot_write

        raise cannot_write(root, exc, "DIRECTORY") from None
    return root


def prepare(root: str | Path) -> DemoPaths:
    """The demo project: tiny model and data (made once) and the learning-rate sweep (laid out once)."""
    from lfgen.experiments.make import make_sweep
    from lfgen.tiny import make_mapping_dataset, make_model

    root = _root(root)
    if not (root / "tiny-model" / "config.json").is_file():
        make_model(root / "tiny-model")
    if not (root / "data" / DATASET_INFO).is_file():
        make_mapping_dataset(root / "data")
    paths = DemoPaths(root, root / "experiments" / NAME, root / "outputs" / NAME, root / "report.html")
    if not (paths.experiment / MANIFEST).is_file():
        # --gpu cpu: the demo trains on the CPU even on a machine with a GPU
        options = BuildOptions.parse(model="./tiny-model", gpu="cpu", template="qwen", dataset=["tiny_mapping"],
                                     dataset_dir="data", precision="fp32", method="full", set=DEMO_SETTINGS)
        with contextlib.chdir(root):  # the demo folder is the experiment's root: its paths are relative to it
            make_sweep("lr", list(RATES), base="auto", options=options, name=NAME)
    return paths


def prepare_vlm(root: str | Path) -> DemoPaths:
    """The vision-language demo project: a tiny Qwen2-VL, pictures and captions (made once) and a two-run sweep of
    the caption preset, vision tower frozen and trained (laid out once)."""
    from lfgen.experiments.make import make_sweep
    from lfgen.tiny_vlm import CAPTIONS, make_images_dataset, make_qwen2_vl

    root = _root(root)
    if not (root / "tiny-qwen2-vl" / "config.json").is_file():
        make_qwen2_vl(root / "tiny-qwen2-vl")
    if not (root / "data" / DATASET_INFO).is_file():
        make_images_dataset(root / "data", rows=VLM_ROWS)
    paths = DemoPaths(root, root / "experiments" / VLM_NAME, root / "outputs" / VLM_NAME, root / "report.html")
    if not (paths.experiment / MANIFEST).is_file():
        options = BuildOptions.parse(model="./tiny-qwen2-vl", gpu="cpu", dataset=[CAPTIONS], dataset_dir="data",
                                     precision="fp32", set=VLM_SETTINGS)
        with contextlib.chdir(root):
            make_sweep("vision", [], base="caption", options=options, name=VLM_NAME)
    return paths
