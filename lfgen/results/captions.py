"""The pictures of a vision-language run's held-out rows, as thumbnails beside its answers in the report.

LlamaFactory writes no image path with its predictions, so the rows are found in the order it predicted them (the
eval config's ``eval_dataset`` in order, or the ``val_size`` split: the first rows of datasets' permutation of
``seed``), each checked against its prediction's reference. The caption scores and the collapsed placeholders are
lfgen.runs.captions.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

THUMBNAIL = 96  # px, the longest side of a thumbnail in the report

def _split_order(rows: int, val_size: float, seed: int) -> list[int]:
    """datasets' Dataset.train_test_split(test_size=val_size, seed=seed) test indices, in their order."""
    import numpy as np

    test = math.ceil(val_size * rows) if val_size < 1 else int(val_size)
    return [int(i) for i in np.random.default_rng(seed).permutation(rows)[:test]]


def held_out(eval_dir: Path) -> list[Any] | None:
    """The rows LlamaFactory predicted on (data_rows.Sample, with their image paths), in its order, from the eval's
    own config (``lfgen_eval.yaml``); None when they cannot be read."""
    from lfgen.builder import data_rows, datasets
    from lfgen.errors import InputError
    from lfgen.layout import EVAL_CONFIG
    from lfgen.paths import config_root
    from lfgen.yamlio import load_config

    path = eval_dir / EVAL_CONFIG
    try:
        config = load_config(path)
        root = config_root(path) or Path.cwd()
        dataset_dir = root / str(config.get("dataset_dir") or "data")
        info = datasets.load_info(dataset_dir)
        key = "eval_dataset" if config.get("eval_dataset") else "dataset"
        cap = config.get("max_samples")
        rows: list[Any] = []
        for name in datasets.split_names(config.get(key)):
            found = [s for s, _ in data_rows.samples(name, info[name], dataset_dir)]
            rows += found[:cap] if isinstance(cap, int) else found
    except (InputError, KeyError, OSError):
        return None
    if key == "eval_dataset":
        return rows
    val = config.get("val_size")
    if not isinstance(val, (int, float)) or val <= 0:
        return None
    return [rows[i] for i in _split_order(len(rows), float(val), int(config.get("seed", 42)))]


def _same(a: str, b: str) -> bool:
    return " ".join(str(a).split()) == " ".join(str(b).split())


def images_of(run_dir: str | Path, labels: list[str]) -> list[list[Path]]:
    """The image files of each predicted row whose reference is *labels*[i] ([] where unknown), under the eval's
    media_dir (default its dataset_dir); rows are matched by order and checked by their reference answer."""
    from lfgen.builder.data_media import locate
    from lfgen.layout import EVAL_CONFIG, EVAL_DIR
    from lfgen.paths import config_root
    from lfgen.yamlio import load_config

    eval_dir = Path(run_dir) / EVAL_DIR
    rows = held_out(eval_dir)
    if rows is None:
        return [[] for _ in labels]
    try:
        config = load_config(eval_dir / EVAL_CONFIG)
    except Exception:  # noqa: BLE001 -- held_out read it a moment ago; a vanished file: no images
        return [[] for _ in labels]
    root = config_root(eval_dir / EVAL_CONFIG) or Path.cwd()
    media = root / str(config.get("media_dir") or config.get("dataset_dir") or "data")
    out = []
    for i, label in enumerate(labels):
        row = rows[i] if i < len(rows) and _same(rows[i].answer, label) else None
        found = [locate(p, media)[0] for p in row.images] if row is not None else []
        out.append([f for f in found if f is not None])
    return out


def thumbnail(path: Path) -> str | None:
    """A data: URI of a PNG thumbnail of *path* (the report stays one file); None when Pillow cannot read it."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (ImportError, OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_thumbnails(run_dir: str | Path, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*answers* (lfgen.results.scoring.examples) with ``images``: a thumbnail of each row's pictures, for rows
    whose prompt held an image; the rest unchanged."""
    if not any("[image:" in a.get("prompt", "") for a in answers):
        return answers
    found = images_of(run_dir, [a.get("label", "") for a in answers])
    return [{**a, "images": [uri for uri in map(thumbnail, paths) if uri]} for a, paths in zip(answers, found)]
