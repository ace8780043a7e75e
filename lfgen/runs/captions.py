"""Caption scores of a vision-language run's predictions (lfgen eval): what LlamaFactory's predict does not compute.

* ``collapse``: LlamaFactory writes each prompt with its image expanded into the model's placeholder tokens
  (``<|image_pad|>`` x 132 for one Qwen2-VL picture); a run of them becomes ``[image: 132 tokens]``.
* ``cider_d``: CIDEr-D (Vedantam et al., CVPR 2015), the captioning metric RSICap-style sets report, computed as
  coco-caption's reference scorer does (pycocoevalcap ``cider/cider_scorer.py``: n-grams 1-4, tf-idf over the
  evaluated set's references, candidate counts clipped to the reference's, a Gaussian length penalty with
  sigma 6 on the bigram count, x 10). No maintained package fits: pycocoevalcap 1.2 (2020) is a 104 MB wheel whose
  tokenizer needs Java, aac-metrics pulls librosa and pins an older transformers. Tokens here are lower-case
  words and single CJK characters, punctuation dropped (PTB-like, without Java). tests/runs/test_captions.py
  holds pycocoevalcap's own scores of fixed captions.

The report's thumbnails of the held-out pictures are lfgen.results.captions.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, defaultdict

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
