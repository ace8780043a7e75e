"""The images and videos of a multimodal dataset, checked and measured before a GPU is touched.

For a dataset whose registration names an ``images`` or ``videos`` column (LlamaFactory's mllm_demo layout):

* every file exists, looked up as LlamaFactory's converter does (``data/converter.py`` ``_find_medias``):
  ``media_dir`` (default: ``dataset_dir``) joined with the path, else the path as given, from the directory
  LlamaFactory runs in (a missing file kills the whole run in preprocessing);
* the ``<image>`` / ``<video>`` placeholders of a row match its images / videos (``_validate_messages``);
* with a vision-language model: each image's size (Pillow reads the header, not the pixels) becomes tokens by
  the model's rule at ``image_max_pixels`` (``lfgen.models.image_tokens``), so each row's text + image
  tokens, their distribution, and the rows whose image span a cutoff_len would cut: LlamaFactory truncates
  the prompt without looking at image spans and the run crashes at its first step (vlm.md §3.2).

Video tokens are not counted (the frame count needs the video decoded): their rows are said to be unmeasured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder.data_lengths import Lengths, counter
from lfgen.builder.data_rows import Sample

IMAGE = "<image>"  # LlamaFactory's IMAGE_PLACEHOLDER / VIDEO_PLACEHOLDER (extras/constants.py)
VIDEO = "<video>"
LINES = 10  # example lines kept per kind (counts are always complete)


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LlamaFactory's data/processor/processor_utils.py infer_seqlen: what one turn keeps of its prompt
    (source) and answer (target) under *cutoff_len*."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    return min(max(cutoff_len - new_target, 0), source_len), new_target


@dataclass(frozen=True)
class Span:
    """One row's tokens: prompt (source, image tokens included), answer (target), where its last image ends."""

    source: int
    target: int
    image_end: int  # prompt tokens up to the last image token (its closing marker excluded; 0: no image)
    image_tokens: int = 0  # the row's image tokens, markers included (inside source)
    patches: int = 0  # the vision tower's patches behind them (lfgen.models.image_tokens.vision_patches)

    @property
    def total(self) -> int:
        return self.source + self.target

    def cut_at(self, cutoff_len: int) -> bool:
        """Whether *cutoff_len* cuts into an image span of this row (the run would crash)."""
        return self.image_end > 0 and infer_seqlen(self.source, self.target, cutoff_len)[0] < self.image_end

    def safe_cutoff(self) -> int:
        """The smallest cutoff_len from which no larger one cuts an image of this row. Above 2 x answer the
        prompt keeps cutoff - answer tokens; below it the kept prompt grows with the cutoff (so a bisection)."""
        if self.image_end == 0:
            return 1
        largest_cut = 0
        if self.image_end + self.target - 1 > 2 * self.target:  # cutoffs above 2 x answer that still cut
            largest_cut = self.image_end + self.target - 1
        low, high = 0, min(2 * self.target, self.total)  # the largest cutoff <= 2 x answer that cuts
        while low < high:
            mid = (low + high + 1) // 2
            if self.cut_at(mid):
                low = mid
            else:
                high = mid - 1
        return max(largest_cut, low) + 1


@dataclass
class MediaReport:
    """A dataset's images and videos: files, placeholders, image tokens, and the cuts a cutoff_len makes."""

    columns: dict[str, str]
    media_dir: str
    images: int = 0
    videos: int = 0
    missing: int = 0
    outside_media_dir: int = 0  # found only relative to the current directory
    rule: str | None = None  # the model's image-token rule, as a sentence
    template: str | None = None  # LlamaFactory's template whose tokens wrap the prompt and the answer
    image_max_pixels: int | None = None
    image_min_pixels: int | None = None
    image_tokens: Lengths | None = None  # per row
    lengths: Lengths | None = None  # text + image tokens per row
    cutoff_len: int = 0
    truncated: int = 0  # rows whose text + image tokens pass cutoff_len
    cut: int = 0
    cut_rows: list[str] = field(default_factory=list)
    safe_cutoff: int | None = None  # the smallest cutoff_len that cuts no image of any row
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "media_dir": self.media_dir, "images": self.images, "videos": self.videos,
                "missing": self.missing, "outside_media_dir": self.outside_media_dir, "rule": self.rule,
                "template": self.template, "image_max_pixels": self.image_max_pixels,
                "image_min_pixels": self.image_min_pixels,
                "image_tokens": self.image_tokens.to_json() if self.image_tokens else None,
                "lengths": self.lengths.to_json() if self.lengths else None, "cutoff_len": self.cutoff_len,
                "truncated": self.truncated, "cut": self.cut, "cut_rows": self.cut_rows,
                "safe_cutoff_len": self.safe_cutoff, "notes": self.notes}


def locate(path: str, media_dir: Path) -> tuple[Path | None, bool]:
    """Where LlamaFactory finds *path*: (the file, found under media_dir), or (None, False) when nowhere."""
    joined = media_dir / path
    if joined.is_file():
        return joined, True
    given = Path(path).expanduser()
    return (given, False) if given.is_file() else (None, False)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header (Pillow opens lazily); None when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _placeholders(sample: Sample, where: str) -> list[str]:
    problems = []
    for token, items, kind in ((IMAGE, sample.images, "images"), (VIDEO, sample.videos, "videos")):
        count = sample.text.count(token)
        if count != len(items):
            problems.append(f"{where}: {count} {token} placeholder(s) for {len(items)} {kind}; LlamaFactory "
                            f"refuses the row (\"The number of {kind} does not match the number of {token} "
                            f"tokens\"): put one {token} in the prompt for each entry of the column")
    return problems


def _found(path: Any, kind: str, where: str, media_dir: Path, report: MediaReport, problems: list[str]) -> Path | None:
    """The file of one image or video entry, counted; a missing one is a problem line."""
    if isinstance(path, bytes):  # embedded in the data file: nothing to look up
        return None
    found, inside = locate(path, media_dir)
    if found is None:
        report.missing += 1
        problems.append(f"{where}: {kind} {path} does not exist under media_dir {media_dir} nor from {Path.cwd()}; "
                        "LlamaFactory stops the whole run on it (FileNotFoundError in preprocessing)")
    else:
        report.outside_media_dir += not inside
    return found


def _files(samples: list[Sample], media_dir: Path, report: MediaReport, problems: list[str]) -> list[list[Any]]:
    """Check every file; the size of each image per row (None: not measurable)."""
    try:
        import PIL  # noqa: F401 -- installed with torchvision (lfgen[train])
        has_pil = True
    except ImportError:
        has_pil = False
        report.notes.append("image sizes not read: Pillow is not installed (pip install pillow)")
    sizes: list[list[Any]] = []
    for sample in samples:
        problems += _placeholders(sample, sample.where)
        row_sizes: list[Any] = []  # one per image, in order (None: not measurable)
        for path in sample.images:
            found = _found(path, "image", sample.where, media_dir, report, problems)
            size = image_size(found) if found is not None and has_pil else None
            if found is not None and has_pil and size is None:
                problems.append(f"{sample.where}: image {path} is not an image Pillow can read")
            row_sizes.append(size)
        for video in sample.videos:
            for path in video if isinstance(video, tuple) else (video,):
                _found(path, "video", sample.where, media_dir, report, problems)
        sizes.append(row_sizes)
    report.images = sum(len(s.images) for s in samples)
    report.videos = sum(len(s.videos) for s in samples)
    return sizes


def _spans(samples: list[Sample], sizes: list[list[Any]], rule: Any, model: str | None, template: str | None,
           max_pixels: int | None, min_pixels: int | None) -> tuple[list[Span], list[int]]:
    from lfgen.models.image_tokens import image_tokens, vision_patches

    from lfgen.builder.chat_lengths import template_tokens

    count, _ = counter(model)
    # turn 0 of LlamaFactory's template: before the prompt (prefix, default system, user header), after it, around
    # the answer; the one encoding of lfgen's lengths (lfgen.builder.chat_lengths)
    head_tokens, tail_tokens, answer_tokens = template_tokens(template, model)
    closing = rule.numbers.get("wrap", 0) // 2  # the markers after an image's tokens
    befores, rests = [], []
    for sample in samples:
        head, _, tail = sample.prompt.rpartition(IMAGE) if IMAGE in sample.prompt else ("", "", sample.prompt)
        befores.append(head.replace(IMAGE, ""))
        rests.append(tail)
    before, rest, answer = count(befores), count(rests), count([s.answer for s in samples])
    spans, per_row = [], []
    for i, row_sizes in enumerate(sizes):
        each = [image_tokens(rule, w, h, max_pixels, min_pixels) for w, h in
                (s for s in row_sizes[:len(samples[i].images)] if s is not None)]
        tokens = sum(each)
        per_row.append(tokens)
        # a lost closing marker (<|vision_end|>) trains; a lost image token crashes: the span ends at the last
        # image token (measured on the tiny Qwen2-VL: cutoff_len 73 crashes, 74 trains for a row ending at 74)
        end = head_tokens + before[i] + tokens - closing if tokens else 0
        spans.append(Span(head_tokens + before[i] + tokens + rest[i] + tail_tokens, answer[i] + answer_tokens, end,
                          tokens, sum(vision_patches(rule, t) for t in each)))
    return spans, per_row


def _template_of(model: str, family: str, template: str | None) -> str:
    """The template LlamaFactory would use: *template*, else lfgen's guess from the model's name when it takes
    images (LF-TEMPLATE), else the family's own."""
    from lfgen.catalogs.templates import accepts, template_for
    from lfgen.models import vlm

    if template:
        return template
    guess = template_for(model)
    fam = vlm.family(family)
    return guess if guess and accepts(guess, "image") else (fam.templates[0] if fam else "")


def image_sizes(samples: list[Sample], media_dir: str | Path) -> list[list[tuple[int, int] | None]]:
    """Each row's image sizes (None: missing or unreadable), as LlamaFactory finds the files under *media_dir*."""
    return [[image_size(found) if isinstance(path, str) and (found := locate(path, Path(media_dir))[0]) else None
             for path in s.images] for s in samples]


def row_spans(samples: list[Sample], media_dir: str | Path, model: str, *, template: str | None = None,
              image_max_pixels: int | None = None, image_min_pixels: int | None = None,
              sizes: list[list[tuple[int, int] | None]] | None = None) -> list[Span]:
    """Each row's prompt and answer tokens and where its last image ends, as LlamaFactory's *template* encodes
    them for vision-language *model* (for R-DATA-CUTOFF with images and the memory model's sequence length)."""
    from lfgen.errors import InputError
    from lfgen.models import vlm
    from lfgen.models.image_tokens import rule_for

    rule = rule_for(model)
    if rule is None:
        raise InputError(f"--model {model}: not a vision-language model lfgen knows an image rule for")
    sizes = sizes if sizes is not None else image_sizes(samples, media_dir)
    bounds = vlm.defaults()
    return _spans(samples, sizes, rule, model, _template_of(model, rule.family, template),
                  image_max_pixels or bounds["image_max_pixels"], image_min_pixels or bounds["image_min_pixels"])[0]


def measure(samples: list[Sample], columns: dict[str, str], dataset_dir: str | Path, *, model: str | None,
            cutoff_len: int, media_dir: str | Path | None = None, image_max_pixels: int | None = None,
            image_min_pixels: int | None = None, template: str | None = None) -> tuple[MediaReport, list[str]]:
    """Check and measure the media of *samples* (rows of one dataset); the report and its problem lines."""
    from lfgen.models import vlm
    from lfgen.models.image_tokens import rule_for

    root = Path(media_dir) if media_dir is not None else Path(dataset_dir)
    report = MediaReport(columns=columns, media_dir=str(root), cutoff_len=cutoff_len)
    problems: list[str] = []
    sizes = _files(samples, root, report, problems)
    if report.outside_media_dir:
        report.notes.append(f"{report.outside_media_dir:,} file(s) exist only relative to the current directory "
                            f"{Path.cwd()}, not under media_dir: LlamaFactory finds them only when it runs from here")
    rule = rule_for(model) if model else None
    if rule is None:
        why = "no --model given" if not model else f"{model} is not a vision-language model lfgen knows"
        report.notes.append(f"image tokens not counted: {why} (the count depends on the model's image rule)")
        return report, problems
    bounds = vlm.defaults()
    report.rule, report.image_max_pixels = rule.describe(), image_max_pixels or bounds["image_max_pixels"]
    report.image_min_pixels = image_min_pixels or bounds["image_min_pixels"]
    report.template = _template_of(str(model), rule.family, template)
    spans, per_row = _spans(samples, sizes, rule, model, report.template, report.image_max_pixels,
                            report.image_min_pixels)
    method = f"{rule.family} image rule at image_max_pixels {report.image_max_pixels:,}"
    report.image_tokens = Lengths.of(per_row, method)
    report.lengths = Lengths.of([s.total for s in spans], f"text + image tokens ({method})")
    report.truncated = sum(s.total > cutoff_len for s in spans)
    cut = [(samples[i].where, s) for i, s in enumerate(spans) if s.cut_at(cutoff_len)]
    report.cut = len(cut)
    report.cut_rows = [f"{where}: {s.total:,} tokens, its image span ends at token {s.image_end:,} of the prompt; "
                       f"cutoff_len {cutoff_len:,} keeps {infer_seqlen(s.source, s.target, cutoff_len)[0]:,}"
                       for where, s in cut[:LINES]]
    report.safe_cutoff = max((s.safe_cutoff() for s in spans), default=1)
    if report.videos:
        report.notes.append(f"{report.videos:,} video(s): their tokens are not counted (frames x pixels; "
                            "the frame count needs the video decoded)")
    return report, problems


def suggested_cutoff(media: list[MediaReport], text_p99: int, multiple: int,
                     context: int | None = None) -> tuple[int, str] | None:
    """R-DATA-CUTOFF on text + image tokens: p99 of the totals, never below the cutoff that keeps every image
    whole, rounded up to the rule's multiple (capped by the model's context); None without measured images."""
    measured = [m for m in media if m.lengths is not None and m.lengths.count]
    if not measured:
        return None
    p99 = max([text_p99, *(m.lengths.p99 for m in measured)])
    return cutoff_keeping_images(p99, max(m.safe_cutoff or 1 for m in measured), multiple, context)


def cutoff_keeping_images(p99: int, safe: int, multiple: int, context: int | None = None,
                          at: str = "") -> tuple[int, str]:
    """R-DATA-CUTOFF with images: the larger of *p99* (text + image tokens) and *safe* (the smallest cutoff that
    cuts no image), rounded up to *multiple*, capped by *context*; and the arithmetic (*at*: the cap it was at)."""
    value = max(multiple, math.ceil(max(p99, safe) / multiple) * multiple)
    how = (f"p99 of text + image tokens{at} is {p99:,}; cutting no image needs cutoff_len >= {safe:,} -> {value:,} "
           f"(a multiple of {multiple}; a cut image span crashes LlamaFactory)")
    if context is not None and value > context:
        value, how = context, f"{how}, capped by the model's context {context:,}"
    return value, how
