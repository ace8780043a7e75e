"""Caption runs of vision-language models: what the report and lfgen eval add to LlamaFactory's predict output.

* ``collapse``: LlamaFactory writes each prompt with its image expanded into the model's placeholder tokens
  (``<|image_pad|>`` x 132 for one Qwen2-VL picture); a run of them becomes ``[image: 132 tokens]``.
* ``cider_d``: CIDEr-D (Vedantam et al., CVPR 2015), the captioning metric RSICap-style sets report, computed as
  coco-caption's reference scorer does (pycocoevalcap ``cider/cider_scorer.py``: n-grams 1-4, tf-idf over the
  evaluated set's references, candidate counts clipped to the reference's, a Gaussian length penalty with
  sigma 6 on the bigram count, x 10). No maintained package fits: pycocoevalcap 1.2 (2020) is a 104 MB wheel whose
  tokenizer needs Java, aac-metrics pulls librosa and pins an older transformers. Tokens here are lower-case
  words and single CJK characters, punctuation dropped (PTB-like, without Java). tests/results/test_captions.py
  holds pycocoevalcap's own scores of fixed captions.
* ``images_of``: the held-out rows' images, in the order LlamaFactory predicted them (the eval config's
  ``eval_dataset`` in order, or the ``val_size`` split: the first rows of datasets' permutation of ``seed``), each
  row checked against its prediction's reference; the report shows each as a thumbnail.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

THUMBNAIL = 96  # px, the longest side of a thumbnail in the report
_WORDS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)
SIGMA = 6.0
MAX_N = 4


@functools.cache
def _placeholders() -> dict[str, str]:
    """Every multimodal template's placeholder token -> its kind (presets/mm_templates.yaml)."""
    from lfgen.resources import load_data

    found: dict[str, str] = {}
    for row in load_data("mm_templates.yaml")["templates"].values():
        for kind in ("image", "video", "audio"):
            if row.get(kind):
                found[row[kind]] = kind
    return found


@functools.cache
def _runs() -> re.Pattern[str]:
    tokens = sorted(_placeholders(), key=len, reverse=True)
    return re.compile("|".join(f"(?:{re.escape(t)}){{2,}}" for t in tokens))


def has_media(text: str) -> bool:
    """Whether a predicted prompt holds a vision-language model's expanded image (or video, audio)."""
    return _runs().search(text) is not None


def collapse(text: str) -> str:
    """Runs of one placeholder token as ``[image: N tokens]``."""
    def one(match: re.Match[str]) -> str:
        run = match.group(0)
        token = next(t for t in sorted(_placeholders(), key=len, reverse=True) if run.startswith(t))
        return f"[{_placeholders()[token]}: {len(run) // len(token)} tokens]"

    return _runs().sub(one, text)


def tokens(text: str) -> list[str]:
    return _WORDS.findall(str(text).lower())


def _counts(words: list[str]) -> Counter:
    return Counter(tuple(words[i:i + n]) for n in range(1, MAX_N + 1) for i in range(len(words) - n + 1))


def cider_d(candidates: list[str], references: list[list[str]]) -> float | None:
    """CIDEr-D of *candidates* against their *references* (one list per candidate), over the whole set; None for
    an empty set. The document frequency needs several images: one alone scores 0 (log 1 = 0)."""
    if not candidates:
        return None
    tests = [_counts(tokens(c)) for c in candidates]
    refs = [[_counts(tokens(r)) for r in rs] for rs in references]
    frequency: Counter = Counter()
    for rs in refs:
        frequency.update({gram for r in rs for gram in r})
    log_images = math.log(float(len(refs)))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [defaultdict(float) for _ in range(MAX_N)]
        norm = [0.0] * MAX_N
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            vec[n][gram] = float(tf) * (log_images - math.log(max(1.0, frequency[gram])))
            norm[n] += vec[n][gram] ** 2
            if n == 1:  # the reference scorer's length: the number of bigrams
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for test, rs in zip(tests, refs):
        vec, norm, length = vector(test)
        total = [0.0] * MAX_N
        for ref in rs:
            vec_ref, norm_ref, length_ref = vector(ref)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * SIGMA ** 2))
            for n in range(MAX_N):
                value = sum(min(weight, vec_ref[n][gram]) * vec_ref[n][gram] for gram, weight in vec[n].items())
                if norm[n] and norm_ref[n]:
                    value /= norm[n] * norm_ref[n]
                total[n] += value * penalty
        scores.append(sum(total) / MAX_N / max(1, len(rs)) * 10.0)
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- the held-out rows' images

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
