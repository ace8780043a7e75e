"""``lfgen data``: what is in the datasets a config trains on, before a GPU hour is spent on them.

For each dataset registered in ``dataset_info.json``: rows, a format check against the registration,
exact duplicates, overlap with the eval sets, the token-length distribution and how many samples
cutoff_len would truncate, with the cutoff_len R-DATA-CUTOFF would write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.builder import chat_lengths, data_kinds, data_lengths, data_rows, datasets
from lfgen.builder.chat_lengths import Chat
from lfgen.builder.data_clean import Usable, key as _key, usable
from lfgen.builder.data_lengths import Lengths
from lfgen.builder.data_media import MediaReport
from lfgen.errors import InputError

PROBLEM_LINES = 10  # problem lines kept per dataset (the count is always complete)


@dataclass
class DatasetReport:
    """One dataset's rows, problems, duplicates and lengths."""

    name: str
    formatting: str
    files: list[str]
    rows: int
    problem_count: int
    problems: list[str]
    duplicates: int
    lengths: Lengths
    truncated: int
    eval: bool = False
    overlap: dict[str, int] = field(default_factory=dict)  # eval sets: rows also in the training sets
    media: MediaReport | None = None  # datasets with an images or videos column
    kind: str = "supervised"  # lfgen.builder.data_kinds: supervised, pairwise, feedback (KTO) or text

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "formatting": self.formatting, "kind": self.kind, "files": self.files,
               "rows": self.rows, "eval": self.eval, "problem_count": self.problem_count, "problems": self.problems,
               "duplicates": self.duplicates, "lengths": self.lengths.to_json(), "truncated": self.truncated,
               "overlap": self.overlap}
        if self.media is not None:
            out["media"] = self.media.to_json()
        return out


@dataclass
class DataReport:
    """``lfgen data``'s answer; ``to_json`` is the documented ``--json`` shape."""

    dataset_dir: str
    cutoff_len: int
    datasets: list[DatasetReport]
    lengths: Lengths  # the training sets together
    truncated: int
    suggested_cutoff: int
    suggested_how: str
    method: str

    @property
    def ok(self) -> bool:
        return not any(d.problem_count for d in self.datasets)

    def to_json(self) -> dict[str, Any]:
        return {"dataset_dir": self.dataset_dir, "cutoff_len": self.cutoff_len, "ok": self.ok,
                "method": self.method, "datasets": [d.to_json() for d in self.datasets],
                "train": {"lengths": self.lengths.to_json(), "truncated": self.truncated,
                          "suggested_cutoff_len": self.suggested_cutoff, "rule": "R-DATA-CUTOFF",
                          "why": self.suggested_how}}


@dataclass
class _Read:
    name: str
    formatting: str
    files: list[str]
    texts: list[str]
    prompts: list[bytes]
    fulls: list[bytes]
    problems: list[str]
    problem_count: int
    media_columns: dict[str, str] = field(default_factory=dict)  # the registered images/videos columns
    media_rows: list[data_rows.Sample] = field(default_factory=list)
    samples: list[data_rows.Sample] = field(default_factory=list)  # the rows read as samples, in order


def _read(name: str, entry: dict[str, Any], dataset_dir: str | Path) -> _Read:
    files = [str(p) for p in data_rows.data_files(name, entry, dataset_dir)]
    texts, prompts, fulls, problems, count = [], [], [], [], 0
    columns = {k: v for k, v in (entry.get("columns") or {}).items() if k in ("images", "videos") and v}
    media_rows, read = [], []
    for sample, found in data_rows.samples(name, entry, dataset_dir):
        count += len(found)
        problems += found[:max(0, PROBLEM_LINES - len(problems))]
        if sample is None:
            texts.append("")
            continue
        texts.append(sample.text)
        read.append(sample)
        prompts.append(_key(sample.asks))
        fulls.append(_key(sample.identity))
        if columns:
            media_rows.append(sample)
    return _Read(name, entry.get("formatting", "alpaca"), files, texts, prompts, fulls, problems, count, columns,
                 media_rows, read)


def _media(r: _Read, dataset_dir: str | Path, model: str | None, cutoff_len: int,
           media: dict[str, Any]) -> MediaReport | None:
    """The images/videos of a dataset that registers such columns; its problems join the dataset's."""
    if not r.media_columns:
        return None
    from lfgen.builder.data_media import measure

    report, found = measure(r.media_rows, r.media_columns, dataset_dir, model=model, cutoff_len=cutoff_len, **media)
    r.problem_count += len(found)
    r.problems += found[:max(0, PROBLEM_LINES - len(r.problems))]
    return report


def _image_cutoff(media: list[MediaReport], total: Lengths, model: str | None) -> tuple[int, str] | None:
    from lfgen.builder.data_media import suggested_cutoff
    from lfgen.catalogs import rules

    return suggested_cutoff(media, total.p99, int(rules.rule("R-DATA-CUTOFF").table("multiple")),
                            data_lengths.context_length(model))


def _misfit(name: str, entry: dict[str, Any], stage: str | None, dataset_dir: str | Path, key: str) -> list[str]:
    """R-STAGE-DATA: the line saying *name* cannot train *stage*, or nothing."""
    if stage is None:
        return []
    from lfgen.builder.shapes import registry

    problem = data_kinds.fit_problem(name, entry, stage, registry().stages[stage].data, dataset_dir, key)
    return [problem] if problem else []


def rows_of(names: list[str], dataset_dir: str | Path) -> list[int]:
    """Rows of each dataset, for a progress bar's total (the cheap count of lfgen.builder.datasets)."""
    info = datasets.load_info(dataset_dir)
    return [datasets.count_rows(n, info[n], dataset_dir).rows or 0 for n in names if n in info]


def samples_of(names: list[str], dataset_dir: str | Path) -> Usable:
    """The usable training samples of *names* (neither empty nor repeated; lfgen.builder.data_clean) and how many
    were not, for the build's R-DATA-CUTOFF and data size."""
    info = datasets.load_info(dataset_dir)
    problems = datasets.unregistered(names, info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    return usable([sample for n in names for sample in _read(n, info[n], dataset_dir).samples])


def chat_for(model: str | None, template: str | None, kind: str) -> Chat:
    """The template *kind*'s rows are measured through: *template*, else the one lfgen writes for *model*
    (LF-TEMPLATE); plain text (pre-training) and no model and no template: none."""
    if kind == "text" or (template is None and model is None):
        return Chat(None)
    from lfgen.catalogs.templates import table, template_for

    return Chat(template or template_for(model) or table()["fallback"])


def _check_model(model: str) -> None:
    """--model names a local model folder (its tokenizer counts) or an id of lfgen's offline catalog (a
    vision-language model's image rule); anything else is an error, never a silent fall-back to the approximation."""
    from lfgen.models.catalog import catalog_entry
    from lfgen.yamlio import check_path

    if check_path(model, "--model").is_dir() or catalog_entry(model) is not None:
        return
    what = "is not a folder" if Path(model).exists() else "no such folder"
    raise InputError(f"--model: {model}: {what}, nor an id of lfgen's model catalog; give a local model folder (its "
                     "tokenizer counts the tokens), or leave --model out for the stated approximation")


def report(names: list[str], dataset_dir: str | Path, *, model: str | None = None, cutoff_len: int = 2048,
           eval_names: list[str] | None = None, progress: Callable[[int], None] | None = None,
           media_dir: str | Path | None = None, image_max_pixels: int | None = None,
           image_min_pixels: int | None = None, template: str | None = None, stage: str | None = None) -> DataReport:
    """Read, check and measure *names* (training) and *eval_names* (evaluation) from *dataset_dir*;
    *progress* is called with each batch of samples measured. Datasets with an images or videos column also
    get their files checked and, with a vision-language *model*, their image tokens counted at
    *image_max_pixels* (LlamaFactory's default when None) under *media_dir* (default: *dataset_dir*), with the
    tokens LlamaFactory's *template* adds around the prompt (default: the model's). *stage* (an lfgen stage:
    sft, dpo, ...): each dataset must fit it (R-STAGE-DATA)."""
    eval_names = eval_names or []
    if not names:
        raise InputError("data: name at least one dataset registered in dataset_info.json")
    if cutoff_len < 1:
        raise InputError(f"--cutoff-len: must be >= 1 (got {cutoff_len})")
    if model is not None:
        _check_model(model)
    info = datasets.load_info(dataset_dir)
    problems = datasets.unregistered([*names, *eval_names], info, dataset_dir)
    if problems:
        raise InputError(problems[0])
    read = [_read(n, info[n], dataset_dir) for n in [*names, *eval_names]]
    for r in read:
        if not r.texts:
            raise InputError(f"dataset {r.name!r}: {', '.join(r.files) or 'its file_name'} holds no rows; LlamaFactory "
                             f"cannot train or evaluate on an empty dataset: add rows or fix its file_name in "
                             f"{Path(dataset_dir) / datasets.INFO_FILE}")
    reports, train_lengths, method = [], [], ""
    train_prompts = {k for r in read[:len(names)] for k in r.prompts}
    train_fulls = {k for r in read[:len(names)] for k in r.fulls}
    media_options = {"media_dir": media_dir, "image_max_pixels": image_max_pixels,
                     "image_min_pixels": image_min_pixels, "template": template}
    for i, r in enumerate(read):
        kind = data_kinds.kind_of(info[r.name])
        chat = chat_for(model, template, kind)
        rows = [sample for sample in r.samples if sample.text.strip()]
        if chat.template is None and kind != "text":
            lengths, method = chat_lengths.content(rows, model, "no --model or --template")
        else:
            lengths, method = chat_lengths.measure(rows, model, chat, own=True, progress=progress)
        media = _media(r, dataset_dir, model, cutoff_len, media_options)
        is_eval = i >= len(names)
        if not is_eval:
            train_lengths += lengths
        overlap = {"same_sample": sum(k in train_fulls for k in r.fulls),
                   "same_prompt": sum(k in train_prompts for k in r.prompts)} if is_eval else {}
        misfit = _misfit(r.name, info[r.name], stage, dataset_dir, "eval_dataset" if is_eval else "dataset")
        reports.append(DatasetReport(
            name=r.name, formatting=r.formatting, files=r.files, rows=len(r.texts),
            problem_count=r.problem_count + len(misfit), problems=misfit + r.problems,
            duplicates=len(r.fulls) - len(set(r.fulls)), lengths=Lengths.of(lengths, method),
            truncated=data_lengths.truncated(lengths, cutoff_len), eval=is_eval, overlap=overlap, media=media,
            kind=kind))
    total = Lengths.of(train_lengths, method)
    suggested, how = data_lengths.cutoff_for(total, data_lengths.context_length(model))
    with_images = _image_cutoff([d.media for d in reports if not d.eval and d.media], total, model)
    if with_images is not None:  # image tokens count toward cutoff_len (R-VLM-TOKENS)
        suggested, how = with_images
    return DataReport(dataset_dir=str(dataset_dir), cutoff_len=cutoff_len, datasets=reports, lengths=total,
                      truncated=data_lengths.truncated(train_lengths, cutoff_len), suggested_cutoff=suggested,
                      suggested_how=how, method=method)
