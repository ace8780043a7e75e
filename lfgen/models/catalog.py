"""Architecture numbers of a model, from a local folder's config.json or the offline catalog.

Nothing is ever downloaded: a Hugging Face id is looked up in ``presets/models.yaml``; anything
else must be a folder holding the model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, did_you_mean
from lfgen.models import vlm
from lfgen.resources import load_data

# Architectures whose modules lfgen can enumerate without transformers (see modules.py).
SUPPORTED_TYPES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "glm",
    "mixtral", "qwen2_moe", "qwen3_moe", "gpt_neox", "clip",
)
MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")
# transformers' default for tie_word_embeddings where a config.json leaves it out.
_TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3_text")
# Keys that must not reach AutoConfig on the meta path: remote code and load-time settings.
_DROP_FOR_META = ("auto_map", "quantization_config", "architectures", "_name_or_path", "transformers_version")


@dataclass(frozen=True)
class VisionTower:
    """The vision encoder of a CLIP-style model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int
    image_size: int


@dataclass(frozen=True)
class ModelSpec:
    """The numbers that decide LoRA parameter counts and training memory for one model."""

    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    dense_layers: tuple[int, ...] = ()  # MoE models: layers that keep a plain MLP
    max_position_embeddings: int = 0  # CLIP text tower only: learned position table
    projection_dim: int = 0  # CLIP only
    vision: VisionTower | None = None
    multimodal: bool = False  # the checkpoint also has a vision tower (the numbers above are its text model)
    composite: str = ""  # a vision-language model's own model_type (qwen2_vl, llava, ...); "" for text models
    composite_config: str = ""  # its whole config as canonical JSON: lfgen.models.towers builds the skeleton
    source: str = "catalog"
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.model_type in MOE_TYPES and self.num_experts > 0

    def is_sparse_layer(self, index: int) -> bool:
        return self.is_moe and index not in self.dense_layers

    def with_layers(self, num_hidden_layers: int) -> ModelSpec:
        """The same architecture with fewer layers (tests: the counts are per layer)."""
        dense = tuple(i for i in self.dense_layers if i < num_hidden_layers)
        if self.composite:
            whole = vlm.shrink(json.loads(self.composite_config), num_hidden_layers)
            return dataclasses.replace(self, num_hidden_layers=num_hidden_layers, dense_layers=dense,
                                       config={**self.config, "num_hidden_layers": num_hidden_layers},
                                       composite_config=json.dumps(whole, sort_keys=True))
        if self.vision is None:
            config = {**self.config, "num_hidden_layers": num_hidden_layers}
            return dataclasses.replace(self, num_hidden_layers=num_hidden_layers, dense_layers=dense, config=config)
        towers = {key: {**self.config[key], "num_hidden_layers": num_hidden_layers}
                  for key in ("text_config", "vision_config")}
        vision = dataclasses.replace(self.vision, num_hidden_layers=num_hidden_layers)
        return dataclasses.replace(self, num_hidden_layers=num_hidden_layers, config={**self.config, **towers},
                                   vision=vision)


def _need(config: dict[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{where}: '{key}' must be a positive integer (got {value!r}); fix or add it in config.json")
    return value


def _dense_layers(config: dict[str, Any], model_type: str, layers: int) -> tuple[int, ...]:
    # qwen2_moe/qwen3_moe: layer i is sparse iff i not in mlp_only_layers and (i+1) % step == 0.
    if model_type not in ("qwen2_moe", "qwen3_moe"):
        return ()
    only = set(config.get("mlp_only_layers") or [])
    step = config.get("decoder_sparse_step") or 1
    return tuple(i for i in range(layers) if i in only or (i + 1) % step != 0)


def _text_part(config: dict[str, Any], where: str) -> tuple[dict[str, Any], bool]:
    """Composite (vision + text) configs: the text model is what LoRA adapts."""
    text = config.get("text_config")
    if config.get("model_type") in SUPPORTED_TYPES or not isinstance(text, dict):
        return config, False
    text = {"model_type": f"{config.get('model_type')}_text", **text}  # gemma3 -> gemma3_text when unnamed
    if text.get("model_type") not in SUPPORTED_TYPES:
        raise InputError(f"{where}: unsupported architecture model_type={config.get('model_type')!r}; "
                         f"lfgen knows {', '.join(SUPPORTED_TYPES)}")
    return text, True


def _with_defaults(config: dict[str, Any], merge: bool = True) -> dict[str, Any]:
    """Fill keys a config.json leaves at transformers' defaults, when transformers is installed. A composite
    config is taken whole from transformers (*merge* False): its nested text_config and vision_config are
    completed there, and a flat Qwen2-VL file is nested."""
    try:
        from transformers import AutoConfig
    except ImportError:  # the table path still works from the keys that are present
        return config
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "unrecognized keys in rope_parameters" and the like: noise here
    try:
        clean = {k: v for k, v in config.items() if k not in _DROP_FOR_META and k != "model_type"}
        full = AutoConfig.for_model(config["model_type"], **clean).to_dict()
    except Exception:  # noqa: BLE001 -- a config transformers rejects is reported below, key by key
        return config
    finally:
        hf_logging.set_verbosity(verbosity)
    return {**full, **config} if merge else {**full, "model_type": config["model_type"]}


def _composite_spec(config: dict[str, Any], name: str, source: str, where: str) -> ModelSpec:
    """A vision-language config: the text model's numbers (what the text tables and the memory model read),
    plus the whole config for the per-tower counts (lfgen.models.towers)."""
    full = config if source == "catalog" else _with_defaults(config, merge=False)
    text = vlm.text_config(full, where)
    if text.get("model_type") not in SUPPORTED_TYPES:
        raise InputError(f"{where}: the language model of this {config.get('model_type')} checkpoint is "
                         f"model_type={text.get('model_type')!r}, which lfgen does not know; lfgen knows "
                         f"{', '.join(SUPPORTED_TYPES)}")
    spec = spec_from_config(text, name, source)
    whole = {k: v for k, v in full.items() if k not in _DROP_FOR_META}
    return dataclasses.replace(spec, multimodal=True, composite=str(config["model_type"]),
                               composite_config=json.dumps(whole, sort_keys=True, default=str))


def spec_from_config(config: dict[str, Any], name: str, source: str, multimodal: bool = False) -> ModelSpec:
    """Normalise a config.json dict (or a catalog entry) into a ModelSpec."""
    where = f"model {name}"
    why = vlm.unsupported(str(config.get("model_type")))
    if why and config.get("model_type") != "clip":  # CLIP stays countable (module names, seed 000's counts)
        raise InputError(f"{where}: model_type {config.get('model_type')!r} is a model LlamaFactory cannot train: {why}")
    if vlm.is_composite_config(config):
        return _composite_spec(config, name, source, where)
    config, composite = _text_part(config, where)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise InputError(f"{where}: unsupported architecture model_type={model_type!r}"
                         f"{did_you_mean(str(model_type), SUPPORTED_TYPES)}; lfgen knows {', '.join(SUPPORTED_TYPES)}")
    if model_type == "clip":
        return _clip_spec(config, name, source, where)
    raw = {k: v for k, v in config.items() if k not in _DROP_FOR_META}
    if source != "catalog":  # catalog entries are complete; a config.json may rely on defaults
        config = _with_defaults(config)
    hidden = _need(config, "hidden_size", where)
    heads = _need(config, "num_attention_heads", where)
    layers = _need(config, "num_hidden_layers", where)
    kv_heads = config.get("num_key_value_heads") or heads
    experts = config.get("num_local_experts") or config.get("num_experts") or 0
    tie = config.get("tie_word_embeddings", model_type in _TIED_BY_DEFAULT)
    return ModelSpec(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=_need(config, "intermediate_size", where),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=config.get("head_dim") or hidden // heads,
        vocab_size=_need(config, "vocab_size", where),
        tie_word_embeddings=bool(tie),
        # gpt_neox defaults to biased attention; qwen2 hard-codes q/k/v bias (modules.py).
        attention_bias=bool(config.get("attention_bias", model_type == "gpt_neox")),
        mlp_bias=bool(config.get("mlp_bias", False)),
        num_experts=experts if model_type in MOE_TYPES else 0,
        num_experts_per_tok=config.get("num_experts_per_tok", 0) if experts else 0,
        moe_intermediate_size=config.get("moe_intermediate_size") or (
            config["intermediate_size"] if model_type == "mixtral" else 0),
        shared_expert_intermediate_size=config.get("shared_expert_intermediate_size") or 0,
        dense_layers=_dense_layers(config, model_type, layers) if experts else (),
        multimodal=multimodal or composite,
        source=source,
        config=raw,
    )


def _clip_spec(config: dict[str, Any], name: str, source: str, where: str) -> ModelSpec:
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    hidden = _need(text, "hidden_size", f"{where} text_config")
    heads = _need(text, "num_attention_heads", f"{where} text_config")
    return ModelSpec(
        name=name, model_type="clip", hidden_size=hidden,
        intermediate_size=_need(text, "intermediate_size", f"{where} text_config"),
        num_hidden_layers=_need(text, "num_hidden_layers", f"{where} text_config"),
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
        vocab_size=_need(text, "vocab_size", f"{where} text_config"), tie_word_embeddings=False,
        attention_bias=True, mlp_bias=True,
        max_position_embeddings=text.get("max_position_embeddings", 77),
        projection_dim=config.get("projection_dim", 512),
        vision=VisionTower(**{k: _need(vision, k, f"{where} vision_config") for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size")}),
        source=source, config=config,
    )


@functools.cache
def _catalog() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for entry in load_data("models.yaml")["models"]:
        for model_id in entry["ids"]:
            entries[model_id.lower()] = {**entry, "id": model_id}
    return entries


def catalog_ids() -> list[str]:
    """Every Hugging Face id the offline catalog knows, in catalog order."""
    return [entry["id"] for entry in _catalog().values()]


def catalog_entry(model_id: str) -> dict[str, Any] | None:
    """The raw catalog entry (ids, params_b, config) for an id, matched case-insensitively."""
    return _catalog().get(model_id.strip().lower())


def _read_config(folder: Path) -> dict[str, Any]:
    from lfgen.yamlio import read_json_object

    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"--model {folder}: the folder has no config.json; "
                         "point --model at the model folder that holds config.json")
    return read_json_object(path, f"--model {folder}: config.json", "re-download or fix the file")


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Resolve ``--model``: a local folder with config.json, else a catalog id (never downloads)."""
    text = str(name_or_path).strip()
    folder = Path(text).expanduser()
    try:
        is_dir, is_file = folder.is_dir(), folder.is_file()
    except OSError as exc:  # too long, no permission: a path the user gave, so an error, not a Hub id
        from lfgen.errors import short_path
        from lfgen.yamlio import path_problem

        raise InputError(f"--model {short_path(text)}: cannot be read: {path_problem(exc)}") from None
    if is_dir:
        return spec_from_config(_read_config(folder), name=text, source=str(folder))
    if is_file and folder.name == "config.json":
        return spec_from_config(_read_config(folder.parent), name=str(folder.parent), source=str(folder.parent))
    entry = catalog_entry(text)
    if entry is None:
        close = difflib.get_close_matches(text.lower(), list(_catalog()), n=3, cutoff=0.6)
        hint = f" (did you mean: {', '.join(_catalog()[key]['id'] for key in close)}?)" if close else ""
        raise InputError(
            f"--model {text}: not a local folder and not in lfgen's offline catalog{hint}; "
            "download the model and point --model at the local folder that holds its config.json "
            "(`lfgen` never downloads), or see `presets/models.yaml` for the known ids")
    return spec_from_config(dict(entry["config"]), name=entry["id"], source="catalog",
                            multimodal=bool(entry.get("multimodal")))
