"""Token lengths of training samples: the model's own tokenizer when the model is a local folder, else a
stated approximation; their distribution, and the cutoff_len R-DATA-CUTOFF takes from it.

The tokenizer is loaded only here and only when needed (``tokenizers`` reads tokenizer.json directly and
encodes in batches in Rust; ``transformers.AutoTokenizer`` is the fallback for folders without one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lfgen.catalogs import rules

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
APPROXIMATION = "approximated: characters / 4, CJK characters / 1.5 (pass --model with a local model folder " \
                "for its tokenizer)"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
_BATCH = 2000  # texts per tokenizer call: big enough for Rust's parallel batch, small enough for a progress bar

Progress = Callable[[int], None]  # called with the number of texts just measured


@dataclass(frozen=True)
class Lengths:
    """The distribution of token lengths of a set of samples; ``method`` says how they were counted."""

    count: int
    p50: int
    p90: int
    p99: int
    max: int
    mean: float
    method: str
    cutoff_len: int | None = None  # where the build cut: the truncation count below is at this length
    truncated: int | None = None
    # A vision-language run's data: the most vision patches and image tokens one sample holds at the run's
    # image_max_pixels (the memory model's vision terms), and that cap.
    image_patches: int = 0
    image_tokens: int = 0
    image_max_pixels: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.image_max_pixels is None:  # text data: the keys it always had
            for key in ("image_patches", "image_tokens", "image_max_pixels"):
                del data[key]
        return data

    @classmethod
    def of(cls, lengths: Sequence[int], method: str) -> Lengths:
        ordered = sorted(lengths)
        if not ordered:
            return cls(0, 0, 0, 0, 0, 0.0, method)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 90), percentile(ordered, 99),
                   ordered[-1], round(sum(ordered) / len(ordered), 1), method)


def percentile(ordered: Sequence[int], pct: float) -> int:
    """The nearest-rank percentile of sorted *ordered*: the smallest value with pct% of the values at or below."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def approximate(text: str) -> int:
    """Tokens of *text* without a tokenizer: ~4 characters per token for English and code, ~1.5 for CJK."""
    cjk = len(_CJK.findall(text))
    return math.ceil((len(text) - cjk) / 4 + cjk / 1.5)


@dataclass
class Tokens:
    """A model's tokenizer as a batch counter (or the approximation), with what LlamaFactory's template asks of it."""

    count: Callable[[list[str]], list[int]]
    method: str
    exact: bool = False  # a real tokenizer (else the approximation)
    bos: bool = True  # the tokenizer has a BOS token (a template's {bos} slot adds one)
    add_special: Callable[[list[str]], None] = lambda _words: None  # make words one token each (stop words)


def _approximated(note: str = "") -> Tokens:
    return Tokens(lambda texts: [approximate(t) for t in texts], APPROXIMATION + note)


def _has_bos(folder: Path) -> bool:
    """Whether the tokenizer declares a BOS token (tokenizer_config.json or special_tokens_map.json)."""
    import json

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            found = json.loads((folder / name).read_text(encoding="utf-8")).get("bos_token")
        except (OSError, ValueError, AttributeError):
            continue
        if found is not None:
            return bool(found.get("content") if isinstance(found, dict) else found)
    return False


def tokens(model: str | None) -> Tokens:
    """The token counter of *model*: a local folder's tokenizer, else the approximation."""
    folder = Path(model) if model else None
    if folder is None or not folder.is_dir():
        return _approximated()
    what = f"{folder}'s tokenizer"
    if (folder / "tokenizer.json").is_file():
        from tokenizers import AddedToken, Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no character offsets
        return Tokens(lambda texts: [len(e.ids) for e in encode(texts, add_special_tokens=False)], what, True,
                      _has_bos(folder),
                      lambda words: tokenizer.add_special_tokens([AddedToken(w, special=True) for w in words]))
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        # transformers builds an empty tokenizer from a bare config.json (every text: 0 tokens)
        return _approximated(f"; {folder} has no tokenizer files")
    try:
        from transformers import AutoTokenizer

        auto = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - any loading failure: say it and approximate
        return _approximated(f"; {folder}'s tokenizer: {exc}")
    return Tokens(lambda texts: [len(ids) for ids in auto(texts, add_special_tokens=False)["input_ids"]], what, True,
                  auto.bos_token_id is not None,
                  lambda words: auto.add_special_tokens({"additional_special_tokens": words},
                                                        replace_additional_special_tokens=False))


def counter(model: str | None) -> tuple[Callable[[list[str]], list[int]], str]:
    """A batch token counter for *model* and what it is: the folder's tokenizer (content tokens), or the
    approximation."""
    found = tokens(model)
    return found.count, found.method + (" (content tokens)" if found.exact else "")


def measure(texts: Sequence[str], model: str | None, progress: Progress | None = None) -> tuple[list[int], str]:
    """Token length of every text, in order, and how they were counted."""
    count, method = counter(model)
    lengths: list[int] = []
    for start in range(0, len(texts), _BATCH):
        batch = list(texts[start:start + _BATCH])
        lengths += count(batch)
        if progress is not None:
            progress(len(batch))
    return lengths, method


def context_length(model: str | None) -> int | None:
    """The model's context (max_position_embeddings of a local folder's config.json), when known."""
    if not model or not (Path(model) / "config.json").is_file():
        return None
    import json

    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def cutoff_for(lengths: Lengths, context: int | None) -> tuple[int, str]:
    """R-DATA-CUTOFF: p99 rounded up to the rule's multiple, capped by the model's context; and the arithmetic."""
    spec = rules.rule("R-DATA-CUTOFF")
    multiple, pct = int(spec.table("multiple")), int(spec.table("percentile"))
    value = max(multiple, math.ceil(lengths.p99 / multiple) * multiple)
    how = f"p{pct} of {lengths.count:,} samples is {lengths.p99:,} tokens -> {value:,} (a multiple of {multiple})"
    if context is not None and value > context:
        value, how = context, f"{how}, capped by the model's context {context:,}"
    return value, how


def truncated(lengths: Sequence[int], cutoff_len: int) -> int:
    """How many samples are longer than *cutoff_len* (LlamaFactory cuts them)."""
    return sum(1 for n in lengths if n > cutoff_len)
