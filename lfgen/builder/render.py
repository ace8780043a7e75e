"""Rendering a config to LlamaFactory YAML through the dumb template in ``templates/``.

Keys are grouped under LlamaFactory's own section headers (``### model`` ... ``### eval``)
in the order of its examples; each value goes through ``yaml_scalar`` so any string
(``: ``, ``#``, quotes, newlines, unicode) loads back unchanged.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lfgen.yamlio import _FLOAT

if TYPE_CHECKING:
    from lfgen.builder.context import Build

SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("model_name_or_path", "adapter_name_or_path", "trust_remote_code", "quantization_bit",
              "quantization_method", "flash_attn"),
    "method": ("stage", "do_train", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
               "additional_target", "disable_gradient_checkpointing"),
    "dataset": ("dataset", "dataset_dir", "template", "cutoff_len", "max_samples", "overwrite_cache",
                "preprocessing_num_workers", "dataloader_num_workers"),
    "output": ("output_dir", "logging_steps", "save_steps", "save_total_limit", "plot_loss", "overwrite_output_dir",
               "save_only_model", "report_to"),
    "train": ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
              "max_steps", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "bf16",
              "fp16", "use_cpu", "seed", "ddp_timeout", "resume_from_checkpoint"),
    "eval": ("eval_dataset", "val_size", "per_device_eval_batch_size", "eval_strategy", "eval_steps"),
}
# Keys no list above names go under the section of their LlamaFactory argument group.
_GROUP_SECTION = {"model": "model", "finetuning": "method", "data": "dataset", "training": "train",
                  "generating": "generate"}


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter when PyYAML has it
    """Quotes every string LlamaFactory's loader would read as something else (``1e-4`` is a float there)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")
_LINE_BREAK = re.compile("\r\n|[" + "".join(sorted(_LINE_BREAKS)) + "]")


def _short_float(value: float) -> str | None:
    """``2.0e-4`` rather than ``0.0002`` for small learning rates, as LlamaFactory's examples write them."""
    if value == 0 or not 0 < abs(value) < 1e-3:
        return None
    for digits in range(1, 18):
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        if float(f"{mantissa}e{exponent}") == value:
            mantissa = mantissa.rstrip("0")
            mantissa += "0" if mantissa.endswith(".") else ""
            return f"{mantissa}e{int(exponent)}"
    return None


def yaml_scalar(value: Any) -> str:
    """One value as a single line of YAML that reads back as the same value, with PyYAML's safe
    loader and with LlamaFactory's (OmegaConf's) loader alike."""
    if isinstance(value, (list, dict)):
        return _dump(value)
    return _cached_scalar(type(value), value)


@functools.lru_cache(maxsize=4096)
def _cached_scalar(kind: type, value: Any) -> str:
    # Sweeps render thousands of configs that share most values; yaml.dump is the slow part.
    if kind is float and (short := _short_float(value)) is not None:
        return short
    return _dump(value)


def _dump(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=2**31 - 1)
    text = text.removesuffix("\n").removesuffix("\n...")
    if _LINE_BREAKS.intersection(text):  # the double-quoted style escapes line breaks as \n, \N, \L, \P
        text = yaml.dump(value, Dumper=_Dumper, default_style='"', allow_unicode=True, width=2**31 - 1).rstrip("\n")
    return text


@functools.cache
def _environment():
    from lfgen.resources import jinja_environment

    env = jinja_environment(html=False)
    env.filters["yaml"] = yaml_scalar
    return env


def _section_of(key: str) -> str:
    for title, keys in SECTIONS.items():
        if key in keys:
            return title
    from lfgen.catalogs.llamafactory import snapshot

    spec = snapshot().keys.get(key)
    return _GROUP_SECTION.get(spec.group, "other") if spec else "other"


def sections(config: dict[str, Any], notes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The config as ordered sections of ``{"key", "value", "note"}`` items."""
    notes = notes or {}
    grouped: dict[str, list[str]] = {}
    for key in config:
        grouped.setdefault(_section_of(key), []).append(key)
    order = list(SECTIONS) + ["generate", "other"]
    result = []
    for title in order:
        keys = grouped.get(title, [])
        known = SECTIONS.get(title, ())
        keys.sort(key=lambda k: (known.index(k) if k in known else len(known), k))
        if keys:
            result.append({"title": title, "items": [{"key": k, "value": config[k], "note": notes.get(k, "")}
                                                     for k in keys]})
    return result


def comment_lines(lines: list[str]) -> list[str]:
    """Header lines cut at every line break YAML knows, so each piece stays behind its ``#``: a value
    with a newline (``--set $'run_name=x\ntrust_remote_code: true'``) can never become a key."""
    return [piece for line in lines for piece in _LINE_BREAK.split(line)]


def render(config: dict[str, Any], header: list[str] | None = None, notes: dict[str, str] | None = None) -> str:
    """The config as LlamaFactory YAML: optional comment header, sections, a rule id note per key."""
    return _environment().get_template("train.yaml.j2").render(header=comment_lines(header or []),
                                                               sections=sections(config, notes))


def render_build(result: Build, command: str = "preset", folder: str | Path | None = None,
                 files_at: str | Path | None = None) -> str:
    """The YAML text of a build: recipe header, sections, the rule id after each value. A file written
    into *folder* also records its root (``lfgen-root:``, the working directory, relative to *folder*); the files
    the build carries (a DeepSpeed JSON) are pointed at in *files_at* (default *folder*), or at lfgen's own copies
    when the text goes to stdout."""
    from lfgen.builder.multi_gpu import place
    from lfgen.builder.recipe import header
    from lfgen.paths import root_line

    result = place(result, files_at if files_at is not None else folder)
    notes = {key: decision.rule for key, decision in result.decisions.items()}
    lines = header(result, command) + (root_line(result.config, folder) if folder is not None else [])
    return render(result.config, header=lines, notes=notes)


def write_preset(result: Build, path: str | Path, *, force: bool = False) -> Path:
    """Write a build to *path* (recording its root) and the files it carries beside it; an existing file is kept
    unless *force* (a carried file with the same content is left as it is). Every check comes before any write."""
    from lfgen.errors import InputError
    from lfgen.yamlio import check_can_write, write_atomic, write_new

    path = Path(path)
    check_can_write(path, "-o")
    if (path.exists() or path.is_symlink()) and not force:
        raise InputError(f"-o: {path} already exists; pass --force to overwrite it")
    for name, text in result.files.items():
        beside = path.parent / name
        try:
            differs = beside.exists() and beside.read_text(encoding="utf-8") != text
        except (OSError, UnicodeDecodeError):
            differs = True
        if differs and not force:
            raise InputError(f"-o: {beside} already exists with other content (lfgen writes its {name} beside the "
                             "config); pass --force to overwrite it, or write the config into another folder")
    text = render_build(result, folder=path.parent)
    for name, body in result.files.items():
        beside = path.parent / name
        if not beside.exists() or beside.read_text(encoding="utf-8") != body:
            write_atomic(beside, body)
    return write_new(path, text, force=force)
