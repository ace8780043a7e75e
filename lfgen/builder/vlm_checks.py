"""``lfgen validate`` on a vision-language config: what LlamaFactory only finds after the model has loaded.

* images or videos in the data under a template whose plugin does not take them ("This model does not
  support image input", vlm.md §4 #10), or a multimodal template of another family than the model's;
* a model LlamaFactory cannot train at all (CLIP, InstructBLIP, BLIP-2), with the nearest one it can;
* the freeze keys and targets as LlamaFactory resolves them (``lfgen.models.towers``): a projector or vision
  target it skips silently, ``freeze_multi_modal_projector: false`` under LoRA with nothing to train in the
  projector, a container named in lora_target (PEFT's "Target module ... is not supported");
* vLLM evaluation of a vision-tower adapter (vLLM loads LoRA on the language model only, vllm#16364);
* an image or video file that does not exist: one such file stops the whole LlamaFactory run in preprocessing.

Removed and renamed keys (train_mm_proj_only) are the schema's (``lfgen.builder.schema``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lfgen.errors import InputError

_COUNT_KEYS = ("finetuning_type", "lora_rank", "lora_target", "additional_target", "use_dora",
               "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model",
               "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", "oft_rank",
               "oft_block_size")


def model_type_of(model: str, root: Path | None) -> str | None:
    """config.json's model_type of a local model folder (relative to *root*), else of a catalog id, else of a hub id
    of a model LlamaFactory cannot train (InstructBLIP, BLIP-2)."""
    from lfgen.builder.model import local_path
    from lfgen.models import vlm
    from lfgen.models.catalog import catalog_entry

    path = local_path(model)
    if root is not None and not path.is_absolute():
        path = root / path
    try:
        if (path / "config.json").is_file():
            found = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
            return found if isinstance(found, str) else None
    except (OSError, ValueError, AttributeError):
        return None
    entry = catalog_entry(model)
    return entry["config"].get("model_type") if entry else vlm.unsupported_id_type(model)


def _media_columns(config: dict[str, Any], info: dict[str, Any] | None) -> dict[str, list[str]]:
    """{"image": [dataset, ...], "video": [...]}: the config's datasets that register such a column."""
    from lfgen.builder.datasets import split_names

    found: dict[str, list[str]] = {"image": [], "video": []}
    for name in [*split_names(config.get("dataset")), *split_names(config.get("eval_dataset"))]:
        entry = (info or {}).get(name)
        columns = entry.get("columns") if isinstance(entry, dict) else None
        if isinstance(columns, dict):
            for kind in found:
                if columns.get(f"{kind}s"):
                    found[kind].append(name)
    return found


def _template_problems(config: dict[str, Any], model_type: str | None, info: dict[str, Any] | None) -> list[str]:
    from lfgen.catalogs.templates import accepts, multimodal, template_for
    from lfgen.models import vlm

    template = config.get("template")
    if not isinstance(template, str):
        return []
    fam = vlm.family(model_type) if model_type else None
    right = fam.templates[0] if fam else template_for(str(config.get("model_name_or_path", "")))
    fix = f"use template: {right}" if right and accepts(right, "image") else \
        "use the model's multimodal template (LlamaFactory's supported models table)"
    problems = []
    for kind, names in _media_columns(config, info).items():
        if names and not accepts(template, kind):
            problems.append(f"template: {template!r} has no {kind} plugin, but dataset {names[0]!r} has {kind}s; "
                            f"LlamaFactory stops at the first such row (\"This model does not support {kind} input\"); "
                            f"{fix} (R-VLM-TEMPLATE)")
    if fam is not None and multimodal(template) is not None and template not in fam.templates:
        problems.append(f"template: {template!r} is not a template for a {model_type} model; LlamaFactory's templates "
                        f"for it: {', '.join(fam.templates)} (R-VLM-TEMPLATE)")
    return problems


def _tower_findings(config: dict[str, Any], model: str, root: Path | None) -> tuple[list[str], list[str]]:
    """count_towers on the model: its notes, or its refusal as a problem (needs transformers)."""
    from lfgen.builder.model import local_path
    from lfgen.models import load_model
    from lfgen.models.towers import count_towers

    path = local_path(model, root if root is not None and not Path(model).expanduser().is_absolute() else None)
    try:
        spec = load_model(str(path) if path.is_dir() else model)
        count = count_towers(spec, **{k: config[k] for k in _COUNT_KEYS if k in config})
    except InputError as exc:
        message = str(exc)
        return ([message], []) if message.startswith(("lora_target", "additional_target", "freeze_")) else \
            ([], [f"per-tower check skipped: {message}"])
    return [], [*count.notes, count.line()]


def _missing_media(config: dict[str, Any], root: Path | None, info: dict[str, Any] | None) -> list[str]:
    """One problem per dataset with image or video files LlamaFactory would not find, and one with images it finds
    but cannot open (lfgen data lists each): either stops the whole run in preprocessing."""
    import contextlib
    import importlib.util

    from lfgen.builder import data_rows
    from lfgen.builder.data_media import image_size, locate

    has_pil = importlib.util.find_spec("PIL") is not None  # without Pillow only the paths are checked

    problems: list[str] = []
    base = root or Path.cwd()
    dataset_dir = base / str(config.get("dataset_dir") or "data")
    media_dir = base / str(config.get("media_dir")) if config.get("media_dir") else dataset_dir
    for kind, names in _media_columns(config, info).items():
        for name in dict.fromkeys(names):
            missing: list[str] = []
            unreadable: list[str] = []
            try:
                with contextlib.chdir(base):  # LlamaFactory tries a path as given from where it runs
                    for sample, _ in data_rows.samples(name, info[name], dataset_dir):
                        items = [] if sample is None else (sample.images if kind == "image" else
                                                           [p for v in sample.videos for p in
                                                            (v if isinstance(v, tuple) else (v,))])
                        for item in items:
                            if not isinstance(item, str):
                                continue
                            found = locate(item, media_dir)[0]
                            if found is None:
                                missing.append(f"{item} ({sample.where})")
                            elif kind == "image" and has_pil and image_size(found) is None:
                                unreadable.append(f"{item} ({sample.where})")
            except InputError:
                continue  # the dataset's own problem is reported by the dataset checks
            if missing:
                problems.append(f"dataset {name!r}: {len(missing):,} {kind} file(s) do not exist under media_dir "
                                f"{media_dir}, e.g. {missing[0]}; LlamaFactory stops the whole run on the first one "
                                f"(FileNotFoundError in preprocessing): fix the paths (`lfgen data {name}` lists them)")
            if unreadable:
                problems.append(f"dataset {name!r}: {len(unreadable):,} image file(s) are not images Pillow can "
                                f"read, e.g. {unreadable[0]}; LlamaFactory stops the whole run on the first one "
                                f"(PIL.UnidentifiedImageError in preprocessing): replace or drop them "
                                f"(`lfgen data {name}` lists them)")
    return problems


def check(config: dict[str, Any], root: Path | None, info: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(problems, notes) of one training config; *info* is its dataset_info.json when it could be read."""
    from lfgen.models import vlm

    model = config.get("model_name_or_path")
    if not isinstance(model, str) or not model:
        return [], []
    model_type = model_type_of(model, root)
    problems: list[str] = []
    why = vlm.unsupported(model_type or "")
    if why:
        return [f"model_name_or_path: {model} (model_type {model_type}) is a model LlamaFactory cannot train: "
                f"{why}"], []
    problems += _template_problems(config, model_type, info)
    problems += _missing_media(config, root, info)
    notes: list[str] = []
    if model_type and vlm.family(model_type) is not None:
        found, said = _tower_findings(config, model, root)
        problems, notes = problems + found, notes + said
        if config.get("infer_backend") == "vllm" and config.get("freeze_vision_tower") is False:
            notes.append("infer_backend: vllm loads LoRA on the language model only (vllm-project/vllm#16364): an "
                         "evaluation of this vision-tower adapter through vLLM scores the text half; use "
                         "infer_backend: huggingface")
    return problems, notes
