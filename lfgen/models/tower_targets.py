"""Seed 000's target sets on both towers of a vision-language model (R-TARGET, R-VLM-FREEZE).

Seed 000 tunes LoRA on the attention of both towers of a CLIP model. On a vision-language model with the vision
tower trained (``freeze_vision_tower: false``), ``attn``, ``qv`` and ``mlp`` therefore name the language model's
layers *and* the vision tower's, whose names differ (Qwen2-VL's ViT: ``qkv``, ``proj``, ``fc1``, ``fc2``; CLIP's:
``q_proj`` ... ``out_proj``). LlamaFactory matches each target as a substring of the module path
(``patch_target_modules``), so a vision name is written with as many of its path's last components as it takes to
reach nothing else: ``attn.proj`` on Qwen2-VL, where ``proj`` alone would also reach every ``*_proj`` of the
language model. ``lfgen.models.towers.count_towers`` then counts what LlamaFactory adapts.
"""

from __future__ import annotations

from lfgen.models.catalog import ModelSpec
from lfgen.models.modules import role, roles_of

# Vision-tower names the text tables do not have (Qwen-VL ViTs, InternVL, Qwen3-VL's MLP).
VISION_ROLES = {"qkv": "qkv", "proj": "o", "projection_layer": "o", "linear_fc1": "mlp", "linear_fc2": "mlp"}


def vision_targets(spec: ModelSpec, word: str, text_names: list[str] | tuple[str, ...]) -> list[str]:
    """The names to add to *text_names* (the language model's ``word`` set) so that LlamaFactory also adapts the
    vision tower's layers of that set, and nothing else; [] when the tower has none."""
    from lfgen.models.towers import skeleton

    sk = skeleton(spec)
    composite = sk.composite
    frozen = [*composite.projector, *composite.lora_conflict]  # projector frozen (its default): never reached
    linear = [m for m in sk.modules if m.kind == "linear" and not any(f in m.path for f in frozen)]
    wanted = roles_of(word)
    vision = [m.path for m in linear if composite.tower_of(m.path) == "vision"
              and role(m.path.rsplit(".", 1)[-1], VISION_ROLES) in wanted]
    allowed = set(vision) | {m.path for m in linear if composite.tower_of(m.path) == "language"
                             and m.path.rsplit(".", 1)[-1] in text_names}
    names: list[str] = []
    for path in vision:
        if any(n in path for n in [*text_names, *names]):
            continue  # already reached (CLIP's q_proj by the language model's q_proj)
        parts = path.split(".")
        for depth in range(1, len(parts) + 1):
            candidate = ".".join(parts[-depth:])
            if not candidate[0].isdigit() and all(m.path in allowed for m in linear if candidate in m.path):
                names.append(candidate)
                break
    return names

