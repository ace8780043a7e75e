"""The build steps of a vision-language run (the shape's ``vision`` modality, presets/shapes.yaml; RULES.md §8).

* ``preset_model`` (with the shape): a preset made for vision-language models (seed 001's caption recipe) names
  the nearest model LlamaFactory trains when --model is not given, and refuses a text model.
* ``image_cutoff`` (R-VLM-PIXELS, R-DATA-CUTOFF): with images in the training data, image_max_pixels is the
  smallest step of R-VLM-PIXELS' ladder that scales none of them down, and cutoff_len is R-DATA-CUTOFF on text +
  image tokens at that cap, never below the smallest cutoff that cuts no image (R-VLM-TOKENS); the peak sample's
  vision patches go to the memory model.
* ``vision_keys`` (R-VLM-FREEZE, R-VLM-PIXELS, the preset's own rule): the freeze keys written and explained, the
  cap when no image was read, the preset's vision values (seed 001's learning rate, seed 000's two towers).
* ``step_down`` (R-VLM-PIXELS): the fit to the GPU lowers image_max_pixels before it gives micro-batch 1 up; each
  step recounts the image tokens, the cutoff and the patches (``at_pixels``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfgen.builder import datasets
from lfgen.builder.context import Context, choose_key
from lfgen.catalogs import rules
from lfgen.errors import InputError

# (data stamp, model, template, media_dir) -> (rows, image sizes, largest area), and the same + a cap -> the rows'
# spans: a sweep builds many configs from the same images; each is read once and each cap counted once.
_IMAGES: dict[tuple[Any, ...], Any] = {}
_SPANS: dict[tuple[Any, ...], Any] = {}
# The GPU fit of the config with some keys changed: (changes, sequence length, (vision patches, image tokens)) -> Fit.
Fitter = Callable[[dict[str, Any], int | None, tuple[int, int] | None], Any]


@dataclasses.dataclass(frozen=True)
class AtPixels:
    """What one image_max_pixels gives the data: its lengths (text + image), cutoff, and how."""

    pixels: int
    lengths: Any  # data_lengths.Lengths, with the peak sample's image patches and tokens
    cutoff: int
    safe: int  # the smallest cutoff_len that cuts no image
    how: str


def preset_model(ctx: Context) -> None:
    """The preset's vision-language model when none is given; a vision-only preset refuses a text model; a model
    LlamaFactory cannot train (CLIP, InstructBLIP, BLIP-2) is refused with the nearest one it can (a file's: a
    warning, so explain says it beside the file's values)."""
    unsupported = cannot_train(str(ctx.get("model_name_or_path") or ""))
    if unsupported:
        if ctx.from_file_only:
            ctx.warn("LF-MODEL", unsupported)
        else:
            raise InputError(f"--model: {unsupported}")
    vision = ctx.preset.vision if ctx.preset is not None else None
    if vision is None:
        return
    if vision.model and "model_name_or_path" not in ctx.fixed:
        ctx.replaced.add("model_name_or_path")
        ctx.choose("model_name_or_path", vision.model, vision.rule,
                   f"the {ctx.preset.name} preset's model: {vision.why.split(';')[0]}; the nearest LlamaFactory "
                   "trains (pass --model)")
    if vision.only and not ctx.shape.vision:
        from lfgen.builder.vlm_checks import model_type_of

        model = str(ctx.get("model_name_or_path"))
        # an id lfgen cannot look up may well be a VLM (Qwen2.5-VL-72B): say what is unknown, not "a text model"
        known = model_type_of(model, None) is not None
        what = (f"{model} is a text model" if known else f"lfgen cannot tell what {model} is (not a local folder "
                "with config.json, not in the offline catalog, presets/models.yaml)")
        fix = "pass --model with a vision-language model" if known else \
            "point --model at the model's local folder, or pass a vision-language model of the catalog"
        raise InputError(f"preset: {ctx.preset.name} is for vision-language models, and {what}; {fix} "
                         f"(e.g. {vision.model}), or use another preset (`lfgen presets`)")


def cannot_train(model: str) -> str:
    """Why LlamaFactory cannot train *model* (a CLIP or InstructBLIP folder or catalog id) and the nearest model it
    can, as one sentence; "" for any other model."""
    from lfgen.builder.vlm_checks import model_type_of
    from lfgen.models import vlm

    if not model:
        return ""
    try:
        model_type = model_type_of(model, None)
    except (OSError, RecursionError):
        return ""
    why = vlm.unsupported(model_type or "")
    return f"{model} (model_type {model_type}) is a model LlamaFactory cannot train: {why}" if why else ""


def vision_trains(ctx: Context) -> bool:
    """The run trains the vision tower: freeze_vision_tower false from the user, the file or the preset."""
    if not ctx.shape.vision:
        return False
    if "freeze_vision_tower" in ctx.fixed:
        return ctx.fixed["freeze_vision_tower"][0] is False
    vision = ctx.preset.vision if ctx.preset is not None else None
    return vision is not None and vision.values.get("freeze_vision_tower") is False


def both_towers(ctx: Context, word: str, written: str) -> tuple[str, str]:
    """An abstract target set (qv, attn, mlp) on both towers when the vision tower trains (seed 000): the vision
    tower's own names added to the language model's *written* ones; and how, for the decision."""
    if word not in ("qv", "attn", "mlp") or not vision_trains(ctx) or ctx.model_name is None:
        return written, ""
    from lfgen.models.tower_targets import vision_targets

    names = written.split(",")
    extra = vision_targets(ctx.model_spec, word, names)
    if not extra:
        return written, ""
    return ",".join([*names, *extra]), (f"; with the vision tower trained (seed 000's two towers, R-VLM-FREEZE) also "
                                        f"its {', '.join(extra)}, named so that LlamaFactory's substring match "
                                        "reaches nothing else")


def _cap_fixed(ctx: Context) -> bool:
    return "image_max_pixels" in ctx.fixed


def _image_samples(ctx: Context) -> tuple[list[Any], Path] | None:
    """The training rows of the datasets that register an images column, and the media root; None without any."""
    from lfgen.builder import data_rows

    dataset_dir = str(ctx.get("dataset_dir", "data"))
    try:
        info = datasets.load_info(dataset_dir)
    except InputError:
        return None
    names = [n for n in datasets.split_names(ctx.get("dataset")) if isinstance(info.get(n), dict)
             and (info[n].get("columns") or {}).get("images")]
    if not names:
        return None
    rows = [s for n in names for s, _ in data_rows.samples(n, info[n], dataset_dir) if s is not None]
    return rows, Path(str(ctx.get("media_dir") or dataset_dir))


def at_pixels(ctx: Context, pixels: int) -> AtPixels | None:
    """The data at image_max_pixels *pixels*: lengths of text + image tokens, the cutoff R-DATA-CUTOFF gives them
    (never below the smallest that cuts no image), the peak sample's patches; None when no image was read."""
    from lfgen.builder.data_lengths import Lengths, context_length
    from lfgen.builder.data_media import cutoff_keeping_images, image_sizes, row_spans

    model = str(ctx.get("model_name_or_path", ""))
    template = ctx.fixed["template"][0] if "template" in ctx.fixed else None
    base = _key(ctx)
    if base not in _IMAGES:
        found = _image_samples(ctx)
        if found is None:
            return None
        samples, media = found
        sizes = image_sizes(samples, media)
        _IMAGES.clear()  # one data set at a time
        _SPANS.clear()
        _IMAGES[base] = (samples, media, sizes, max((w * h for row in sizes for w, h in (s for s in row if s)),
                                                     default=0))
    samples, media, sizes, _ = _IMAGES[base]
    if (*base, pixels) not in _SPANS:
        _SPANS[(*base, pixels)] = row_spans(samples, media, model, template=template, image_max_pixels=pixels,
                                            sizes=sizes)
    spans = _SPANS[(*base, pixels)]
    if not spans:
        return None
    measured = Lengths.of([s.total for s in spans], f"text + image tokens at image_max_pixels {pixels:,}")
    peak = max(spans, key=lambda s: (s.patches, s.total))
    safe = max(s.safe_cutoff() for s in spans)
    cutoff, how = cutoff_keeping_images(measured.p99, safe, int(rules.rule("R-DATA-CUTOFF").table("multiple")),
                                        context_length(model), f" at image_max_pixels {pixels:,}")
    lengths = dataclasses.replace(measured, cutoff_len=cutoff, truncated=sum(s.total > cutoff for s in spans),
                                  image_patches=peak.patches, image_tokens=peak.image_tokens, image_max_pixels=pixels)
    return AtPixels(pixels, lengths, cutoff, safe, how)


def _key(ctx: Context) -> tuple[Any, ...]:
    return (*datasets.stamp(datasets.split_names(ctx.get("dataset")), str(ctx.get("dataset_dir", "data"))),
            str(ctx.get("model_name_or_path", "")), ctx.fixed["template"][0] if "template" in ctx.fixed else None,
            ctx.get("media_dir"))


def _largest_area(ctx: Context) -> int:
    return _IMAGES.get(_key(ctx), (None, None, None, 0))[3]


def start_pixels(ctx: Context) -> tuple[int, str]:
    """R-VLM-PIXELS before the GPU: the smallest ladder step that scales none of the data's images down."""
    spec = rules.rule("R-VLM-PIXELS")
    default, ladder = int(spec.table("default")), [int(v) for v in spec.table("ladder")]
    at_default = at_pixels(ctx, default)
    if at_default is None:
        return default, f"LlamaFactory's default ({default:,} = 768 x 768): no image of the data was read"
    largest = _largest_area(ctx)
    fitting = [v for v in ladder if v >= largest]
    value = min(fitting) if fitting else default
    if value == default and largest > default:
        return value, (f"LlamaFactory's default: the data's largest image ({largest:,} pixels) is scaled down to "
                       f"{default:,} (768 x 768)")
    return value, (f"the data's largest image is {largest:,} pixels: {value:,} is the smallest step of "
                   f"{', '.join(f'{v:,}' for v in ladder)} that scales none down")


def image_cutoff(ctx: Context) -> bool:
    """R-VLM-PIXELS and R-DATA-CUTOFF on the images of a vision-language run; False when the data has none."""
    if not ctx.shape.vision:
        return False
    if not ctx.read_data:  # explain rebuilding a file: the cap and lengths its recipe recorded
        lengths = ctx.lengths
        if lengths is None or not lengths.image_max_pixels:
            return False
        ctx.choose("image_max_pixels", lengths.image_max_pixels, "R-VLM-PIXELS", "as lfgen chose it from the data's "
                   "images and the GPU when the file was written")
        ctx.choose("cutoff_len", lengths.cutoff_len, "R-DATA-CUTOFF", f"text + image tokens at image_max_pixels "
                   f"{lengths.image_max_pixels:,}, as measured when the file was written (p99 {lengths.p99:,})")
        ctx.seq_len = lengths.max
        return True
    try:
        if at_pixels(ctx, int(rules.rule("R-VLM-PIXELS").table("default"))) is None:
            return False
    except InputError as exc:
        ctx.warn("R-VLM-TOKENS", f"the data's images are not measured ({exc})")
        return False
    samples, _, sizes, _ = _IMAGES[_key(ctx)]
    unread = [(p, row.where) for row, row_sizes in zip(samples, sizes) for p, size in zip(row.images, row_sizes)
              if size is None and isinstance(p, str)]
    if unread:
        ctx.warn("R-VLM-TOKENS", f"{len(unread):,} image(s) of the data cannot be read, e.g. {unread[0][0]} "
                                 f"({unread[0][1]}): LlamaFactory stops the whole run on a missing or unreadable "
                                 "file; their tokens are not counted (`lfgen data` lists them)")
    if _cap_fixed(ctx):
        pixels = int(ctx.fixed["image_max_pixels"][0])
    else:
        pixels, why = start_pixels(ctx)
        ctx.choose("image_max_pixels", pixels, "R-VLM-PIXELS", why, asked="--dataset-dir" if ctx.options.dataset_dir
                   else None)
    apply(ctx, at_pixels(ctx, pixels))
    return True


def apply(ctx: Context, found: AtPixels | None) -> None:
    """R-DATA-CUTOFF at one cap: cutoff_len, the lengths explain shows, the sequence the estimate sizes."""
    if found is None:
        return
    lengths = found.lengths
    ctx.choose("cutoff_len", found.cutoff, "R-DATA-CUTOFF",
               f"{found.how}; it truncates {lengths.truncated:,} of {lengths.count:,} samples",
               asked="--dataset-dir" if ctx.options.dataset_dir else None)
    final = int(ctx.get("cutoff_len", found.cutoff))
    if final != found.cutoff:
        lengths = dataclasses.replace(lengths, cutoff_len=final)
        if final < found.safe:
            ctx.warn("R-VLM-TOKENS", f"cutoff_len {final} cuts into the image tokens of the data at image_max_pixels "
                                     f"{found.pixels:,}: LlamaFactory crashes at the first step; {found.how}")
    ctx.lengths, ctx.seq_len = lengths, lengths.max


def vision_keys(ctx: Context) -> None:
    """The vision modality's keys with their rules, and the preset's vision values."""
    if not ctx.shape.vision:
        return
    vision = ctx.preset.vision if ctx.preset is not None else None
    values = dict(vision.values) if vision is not None else {}
    for key in ctx.shape.modality.writes:
        if key == "image_max_pixels":
            if key not in ctx.config:
                value = int(rules.rule("R-VLM-PIXELS").table("default"))
                choose_key(ctx, key, value, "R-VLM-PIXELS", f"LlamaFactory's default ({value:,} = 768 x 768): "
                           "the data's images were not read; images larger are scaled down to it")
            continue
        if key in values and vision is not None:
            choose_key(ctx, key, values.pop(key), vision.rule, vision.why)
        elif key == "freeze_vision_tower":
            choose_key(ctx, key, True, "R-VLM-FREEZE", "LlamaFactory's default: the vision tower stays frozen and "
                       "LoRA goes on the language model (seed 000's two-tower LoRA is false)")
        elif key == "freeze_multi_modal_projector":
            choose_key(ctx, key, True, "R-VLM-FREEZE", "LlamaFactory's default: lora_target all never adapts the "
                       "projector; additional_target trains it whole (merger on Qwen-VL, multi_modal_projector on "
                       "LLaVA)")
    for key, value in values.items():
        alternative = None
        if key == "learning_rate" and ctx.rate is not None:
            alternative = f"{ctx.rate.value:g} ({ctx.rate.rule}: {ctx.rate.reason})"
        ctx.choose(key, value, vision.rule, vision.why, alternative=alternative,
                   source=f"preset {ctx.preset.name}: {ctx.preset.source}")


def _first_fit(ctx: Context, current: int, try_fit: Fitter) -> tuple[int, AtPixels | None, Any] | None:
    """The first step of R-VLM-PIXELS' ladder below *current* at which *try_fit* (config changes, sequence length,
    (patches, tokens)) fits: (cap, the data at it, the fit); each step with the data's image tokens, cutoff and patches
    recounted (a cutoff_len the user set stays theirs); None when none does."""
    for pixels in (int(v) for v in rules.rule("R-VLM-PIXELS").table("ladder") if v < current):
        try:
            found = at_pixels(ctx, pixels) if ctx.read_data else None
        except InputError:  # data that cannot be read: R-VLM-TOKENS says so; the ladder goes on by the cap alone
            found = None
        changes: dict[str, Any] = {"image_max_pixels": pixels}
        if found is not None and "cutoff_len" not in ctx.fixed:
            changes["cutoff_len"] = found.cutoff
        images = (found.lengths.image_patches, found.lengths.image_tokens) if found is not None else None
        result = try_fit(changes, found.lengths.max if found is not None else ctx.seq_len, images)
        if result.fits:
            return pixels, found, result
    return None


def step_down(ctx: Context, try_fit: Fitter, before: Any) -> Any:
    """R-VLM-PIXELS with the GPU: the first ladder step below the current cap at which the run fits, chosen with its
    cutoff; None if none does or the cap is the user's. *before*: the fit at the current cap, which did not fit."""
    if not ctx.shape.vision or "image_max_pixels" not in ctx.shape.modality.step_down or _cap_fixed(ctx):
        return None
    current = int(ctx.get("image_max_pixels") or rules.rule("R-VLM-PIXELS").table("default"))
    found = _first_fit(ctx, current, try_fit)
    if found is None:
        return None
    pixels, data, result = found
    ctx.choose("image_max_pixels", pixels, "R-VLM-PIXELS",
               f"with image_max_pixels {pixels:,} it fits, ~{result.estimate.needed:.1f} GiB at micro-batch "
               f"{result.micro_batch} (at {current:,}: {before.estimate.needed:.1f} GiB, over "
               f"{result.budget_gib:.1f}); images larger are scaled down to it")
    apply(ctx, data)
    return result


def pixel_advice(ctx: Context, try_fit: Fitter) -> str:
    """For a cap the user or the file fixed: the first ladder step that would fit, as flags ("" if none)."""
    if not ctx.shape.vision or not _cap_fixed(ctx):
        return ""
    found = _first_fit(ctx, int(ctx.fixed["image_max_pixels"][0]), try_fit)
    if found is None:
        return ""
    pixels, data, result = found
    cutoff = f" --cutoff-len {data.cutoff}" if data is not None and "cutoff_len" not in ctx.fixed else ""
    return f"with --set image_max_pixels={pixels}{cutoff} it would, ~{result.estimate.needed:.1f} GiB (R-VLM-PIXELS)"
