"""The modules of a model, and which of them a LoRA target names.

Two ways to list them, which a test keeps in agreement:

* ``meta``: build the real transformers skeleton on the meta device (no memory, no download)
  from ``AutoConfig.for_model(**numbers)`` and walk ``named_modules()``;
* ``table``: per-architecture tables, used when transformers is not importable.

``lora_target: all`` follows LlamaFactory 0.9.5 ``find_all_linear_modules``: every module whose
class name contains "Linear" but not "Embedding", last name component kept, skipping any
path that contains ``lm_head`` (and ``output_layer`` for chatglm, ``output`` for internlm2).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from lfgen.errors import InputError, did_you_mean
from lfgen.models.catalog import ModelSpec, load_model

ABSTRACT_TARGETS = ("qv", "attn", "mlp", "all")
# What each real module name does, for the abstract target sets.
_ROLES = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o", "dense": "o",
    "qkv_proj": "qkv", "query_key_value": "qkv",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "gate_up_proj": "mlp",
    "dense_h_to_4h": "mlp", "dense_4h_to_h": "mlp", "fc1": "mlp", "fc2": "mlp", "shared_expert_gate": "mlp",
}
_ROLE_SETS = {"qv": {"q", "v", "qkv"}, "attn": {"q", "k", "v", "qkv", "o"}, "mlp": {"mlp"}}


def role(name: str, extra: dict[str, str] | None = None) -> str | None:
    """What a module name does in an abstract target set (q, k, v, qkv, o, mlp), with *extra* names."""
    return {**_ROLES, **(extra or {})}.get(name)


def roles_of(word: str) -> set[str]:
    """The roles an abstract target set (qv, attn, mlp) adapts."""
    return set(_ROLE_SETS[word])


_FORBIDDEN = {"chatglm": ("lm_head", "output_layer"), "internlm2": ("lm_head", "output")}
ROOT = "<root>"  # name of parameters owned by the top-level model (CLIP's logit_scale)


@dataclass(frozen=True)
class ModuleGroup:
    """Modules that share a name and shape (e.g. the 32 ``q_proj`` of a Llama)."""

    name: str  # last path component: what a LoRA target names
    kind: str  # linear | embedding | norm | router | experts | other
    in_features: int
    out_features: int
    params_each: int  # own weights (+ bias) of one module, tied weights included
    count: int
    path: str  # the first module's full path


@dataclass(frozen=True)
class Inventory:
    """Every module that owns parameters, grouped; plus how the list was made."""

    model: str
    model_type: str
    groups: tuple[ModuleGroup, ...]
    tied_params: int  # counted twice in groups (lm_head tied to the embeddings)
    source: str  # "meta" or "table"
    notes: tuple[str, ...] = ()

    @property
    def total_params(self) -> int:
        return sum(g.count * g.params_each for g in self.groups) - self.tied_params

    def named(self, name: str) -> list[ModuleGroup]:
        return [g for g in self.groups if g.name == name]

    def names(self, kinds: Sequence[str] = ("linear",)) -> list[str]:
        return sorted({g.name for g in self.groups if g.kind in kinds})

    def all_linear(self) -> list[str]:
        """LlamaFactory's ``find_all_linear_modules`` on this model."""
        forbidden = _FORBIDDEN.get(self.model_type, ("lm_head",))
        return sorted({g.name for g in self.groups
                       if g.kind == "linear" and not any(f in g.path for f in forbidden)})


# ---------------------------------------------------------------- meta path (transformers)

def _kind(module) -> str:
    import torch

    cls = type(module).__name__
    if "Linear" in cls and "Embedding" not in cls:
        return "linear"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    for marker, kind in (("Norm", "norm"), ("Router", "router"), ("Experts", "experts")):
        if marker in cls:
            return kind
    return "other"


def _shape(module, kind: str) -> tuple[int, int]:
    if kind == "linear":
        return module.in_features, module.out_features
    if kind == "embedding":
        return module.num_embeddings, module.embedding_dim
    if kind == "norm":
        return module.weight.shape[0], module.weight.shape[0]
    if kind == "router":
        return module.weight.shape[1], module.weight.shape[0]
    if kind == "experts":
        _, hidden, inner = module.down_proj.shape  # (experts, hidden, inner)
        return hidden, inner
    return 0, 0


def build_skeleton(spec: ModelSpec):
    """The transformers model for *spec* on the meta device (no weights allocated)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    raw = {k: v for k, v in spec.config.items() if k != "model_type"}
    auto = AutoModel if spec.model_type == "clip" else AutoModelForCausalLM
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # config warnings (rope keys...) are noise here
    try:
        import torch  # after transformers: where transformers is missing, torch is never loaded

        config = AutoConfig.for_model(spec.model_type, **raw)
        with torch.device("meta"):
            return auto.from_config(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def _meta_inventory(spec: ModelSpec) -> Inventory:
    model = build_skeleton(spec)
    groups: dict[tuple, list] = {}
    for path, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        kind = _kind(module)
        key = (path.rsplit(".", 1)[-1] if path else ROOT, kind, *_shape(module, kind), sum(p.numel() for p in own))
        groups.setdefault(key, [0, path or ROOT])[0] += 1
    unique = sum(p.numel() for p in model.parameters())  # parameters() skips tied duplicates
    found = tuple(ModuleGroup(*key, count=n, path=path) for key, (n, path) in groups.items())
    total = sum(g.count * g.params_each for g in found)
    return Inventory(spec.name, spec.model_type, found, total - unique, "meta")


# ---------------------------------------------------------------- table path (no transformers)

class _Table:
    def __init__(self) -> None:
        self.groups: dict[tuple, list] = {}

    def add(self, path: str, kind: str, fan_in: int, fan_out: int, params: int) -> None:
        key = (path.rsplit(".", 1)[-1], kind, fan_in, fan_out, params)
        self.groups.setdefault(key, [0, path])[0] += 1

    def linear(self, path: str, fan_in: int, fan_out: int, bias: bool = False) -> None:
        self.add(path, "linear", fan_in, fan_out, fan_in * fan_out + (fan_out if bias else 0))

    def norm(self, path: str, dim: int, with_bias: bool = False) -> None:
        self.add(path, "norm", dim, dim, dim * (2 if with_bias else 1))

    def embedding(self, path: str, rows: int, dim: int) -> None:
        self.add(path, "embedding", rows, dim, rows * dim)


def _attention(t: _Table, s: ModelSpec, p: str) -> None:
    h, q, kv = s.hidden_size, s.q_dim, s.kv_dim
    if s.model_type == "gpt_neox":
        t.linear(f"{p}.attention.query_key_value", h, 3 * h, s.attention_bias)
        t.linear(f"{p}.attention.dense", h, h, s.attention_bias)
        return
    if s.model_type == "phi3":
        t.linear(f"{p}.self_attn.qkv_proj", h, q + 2 * kv)
        t.linear(f"{p}.self_attn.o_proj", q, h)
        return
    # qwen2 (and qwen2_moe) hard-code the q/k/v bias; glm biases q/k/v only; others all four.
    qkv_bias = True if s.model_type in ("qwen2", "qwen2_moe") else s.attention_bias
    o_bias = s.attention_bias and s.model_type not in ("qwen2", "qwen2_moe", "glm")
    for name, width in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        t.linear(f"{p}.self_attn.{name}", h, width, qkv_bias)
    t.linear(f"{p}.self_attn.o_proj", q, h, o_bias)
    if s.model_type in ("qwen3", "qwen3_moe", "gemma3_text"):
        t.norm(f"{p}.self_attn.q_norm", s.head_dim)
        t.norm(f"{p}.self_attn.k_norm", s.head_dim)


def _mlp(t: _Table, s: ModelSpec, p: str, index: int) -> None:
    h, inner = s.hidden_size, s.intermediate_size
    if s.model_type == "gpt_neox":
        t.linear(f"{p}.mlp.dense_h_to_4h", h, inner, True)
        t.linear(f"{p}.mlp.dense_4h_to_h", inner, h, True)
    elif s.model_type in ("phi3", "glm"):
        t.linear(f"{p}.mlp.gate_up_proj", h, 2 * inner)
        t.linear(f"{p}.mlp.down_proj", inner, h)
    elif s.is_sparse_layer(index):
        e, moe = s.num_experts, s.moe_intermediate_size
        t.add(f"{p}.mlp.gate", "router", h, e, e * h)
        t.add(f"{p}.mlp.experts", "experts", h, moe, e * 3 * h * moe)  # fused gate_up + down
        if s.model_type == "qwen2_moe":
            shared = s.shared_expert_intermediate_size
            for name, a, b in (("gate_proj", h, shared), ("up_proj", h, shared), ("down_proj", shared, h)):
                t.linear(f"{p}.mlp.shared_expert.{name}", a, b)
            t.linear(f"{p}.mlp.shared_expert_gate", h, 1)
    else:
        for name, a, b in (("gate_proj", h, inner), ("up_proj", h, inner), ("down_proj", inner, h)):
            t.linear(f"{p}.mlp.{name}", a, b, s.mlp_bias)


def _decoder_table(s: ModelSpec) -> _Table:
    t, h = _Table(), s.hidden_size
    neox = s.model_type == "gpt_neox"
    root = "gpt_neox" if neox else "model"
    t.embedding(f"{root}.embed_in" if neox else f"{root}.embed_tokens", s.vocab_size, h)
    norms = ["input_layernorm", "post_attention_layernorm"]
    if s.model_type in ("gemma2", "gemma3_text"):
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for i in range(s.num_hidden_layers):
        p = f"{root}.layers.{i}"
        _attention(t, s, p)
        _mlp(t, s, p, i)
        for name in norms:
            t.norm(f"{p}.{name}", h, with_bias=neox)
    t.norm(f"{root}.final_layer_norm" if neox else f"{root}.norm", h, with_bias=neox)
    t.linear("embed_out" if neox else "lm_head", h, s.vocab_size)
    return t


def _clip_tower(t: _Table, p: str, h: int, inner: int, layers: int) -> None:
    for i in range(layers):
        q = f"{p}.encoder.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t.linear(f"{q}.self_attn.{name}", h, h, True)
        t.linear(f"{q}.mlp.fc1", h, inner, True)
        t.linear(f"{q}.mlp.fc2", inner, h, True)
        t.norm(f"{q}.layer_norm1", h, True)
        t.norm(f"{q}.layer_norm2", h, True)


def _clip_table(s: ModelSpec) -> _Table:
    t, v = _Table(), s.vision
    assert v is not None  # catalog._clip_spec always sets it
    t.add(ROOT, "other", 0, 0, 1)  # logit_scale
    t.embedding("text_model.embeddings.token_embedding", s.vocab_size, s.hidden_size)
    t.embedding("text_model.embeddings.position_embedding", s.max_position_embeddings, s.hidden_size)
    _clip_tower(t, "text_model", s.hidden_size, s.intermediate_size, s.num_hidden_layers)
    t.norm("text_model.final_layer_norm", s.hidden_size, True)
    t.add("vision_model.embeddings", "other", 0, 0, v.hidden_size)  # class_embedding
    t.add("vision_model.embeddings.patch_embedding", "other", 0, 0, 3 * v.patch_size ** 2 * v.hidden_size)
    t.embedding("vision_model.embeddings.position_embedding", (v.image_size // v.patch_size) ** 2 + 1, v.hidden_size)
    t.norm("vision_model.pre_layrnorm", v.hidden_size, True)  # sic: transformers' spelling
    _clip_tower(t, "vision_model", v.hidden_size, v.intermediate_size, v.num_hidden_layers)
    t.norm("vision_model.post_layernorm", v.hidden_size, True)
    t.linear("visual_projection", v.hidden_size, s.projection_dim)
    t.linear("text_projection", s.hidden_size, s.projection_dim)
    return t


def _table_inventory(spec: ModelSpec) -> Inventory:
    t = _clip_table(spec) if spec.model_type == "clip" else _decoder_table(spec)
    groups = tuple(ModuleGroup(*key, count=n, path=path) for key, (n, path) in t.groups.items())
    tied = spec.vocab_size * spec.hidden_size if spec.tie_word_embeddings else 0
    return Inventory(spec.name, spec.model_type, groups, tied, "table")


@functools.cache
def _cached_inventory(spec: ModelSpec, source: str) -> Inventory:
    if source == "table":
        return _table_inventory(spec)
    if source == "meta":
        return _meta_inventory(spec)
    if spec.source == "catalog":
        # Catalog entries are architectures the tables cover, and tests/models checks that the tables equal the
        # meta skeleton for every one of them: no reason to import transformers (seconds) for them.
        return _table_inventory(spec)
    try:
        return _meta_inventory(spec)
    except ImportError:
        return _table_inventory(spec)
    except Exception as exc:  # noqa: BLE001 -- transformers rejected the config: the table still knows the layout
        inv = _table_inventory(spec)
        note = f"transformers could not build {spec.name} ({type(exc).__name__}: {exc}); used lfgen's tables"
        return Inventory(inv.model, inv.model_type, inv.groups, inv.tied_params, "table", (note,))


def inventory(model: ModelSpec | str, source: str = "auto") -> Inventory:
    """List the model's modules. ``auto``: lfgen's tables for catalog ids (they equal the meta skeleton, as
    tests/models checks), the meta skeleton for a local folder when transformers imports, else the tables."""
    if source not in ("auto", "meta", "table"):
        raise InputError(f"source: must be auto, meta or table (got {source!r})")
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    return _cached_inventory(spec, source)


# ---------------------------------------------------------------- target resolution

@dataclass(frozen=True)
class Targets:
    """The real module names a LoRA target resolves to on one model."""

    requested: str
    names: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _split(target: str | Sequence[str]) -> list[str]:
    items = target.split(",") if isinstance(target, str) else list(target)
    return [str(item).strip() for item in items if str(item).strip()]


def _abstract(inv: Inventory, word: str) -> Targets:
    if word == "all":
        names = inv.all_linear()
    else:
        names = sorted(n for n in inv.names() if _ROLES.get(n) in _ROLE_SETS[word])
    if not names:
        why = ("its MLP experts are fused parameter tensors in transformers 5.x, not nn.Linear, "
               "so LoRA target_modules cannot reach them" if word == "mlp" and inv.model_type in
               ("mixtral", "qwen3_moe") else "it has no such Linear layers")
        raise InputError(f"lora_target: '{word}' matches nothing on {inv.model} ({inv.model_type}): {why}; "
                         f"its Linear layers are {', '.join(inv.names())}")
    notes = []
    fused = [n for n in names if _ROLES.get(n) == "qkv"]
    if word == "qv" and fused:
        notes.append(f"{inv.model_type} fuses q, k and v into one Linear ({fused[0]}): "
                     f"'qv' adapts the whole {fused[0]}, k included")
    return Targets(word, tuple(names), tuple(notes))


def resolve_targets(model: ModelSpec | Inventory | str, target: str | Sequence[str] = "all") -> Targets:
    """Turn ``qv``/``attn``/``mlp``/``all`` or explicit names into the model's real module names.

    Explicit names are checked against the model; PEFT can adapt Linear and Embedding layers.
    """
    inv = model if isinstance(model, Inventory) else inventory(model)
    items = _split(target)
    requested = ",".join(items)
    if not items:
        raise InputError("lora_target: empty; use all, qv, attn, mlp or module names such as "
                         + ", ".join(inv.names()))
    if len(items) == 1 and items[0].lower() in ABSTRACT_TARGETS:
        return _abstract(inv, items[0].lower())
    adaptable = inv.names(("linear", "embedding"))
    for name in items:
        if name.lower() in ABSTRACT_TARGETS:
            raise InputError(f"lora_target: '{name}' must stand alone (got {requested}); "
                             f"use '{name}' or list module names")
        if name in adaptable:
            continue
        other = inv.named(name)
        if other:
            raise InputError(f"lora_target: '{name}' on {inv.model} is a {other[0].kind} module, not a Linear "
                             f"layer, so PEFT cannot adapt it; Linear layers: {', '.join(inv.names())}")
        raise InputError(f"lora_target: '{name}' is not a module of {inv.model} ({inv.model_type})"
                         f"{did_you_mean(name, adaptable)}; its Linear layers are {', '.join(inv.names())}")
    return Targets(requested, tuple(dict.fromkeys(items)))
