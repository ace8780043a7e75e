"""The memory a vision-language model's vision tower and projector add to a training step (R-VLM-PIXELS).

Three terms, on top of the language model's (lfgen/models/memory.py, which counts the image tokens in the
sequence like any token):

* weights: every parameter of the vision tower and the projector, read from the composite skeleton
  (lfgen/models/towers.py), at the language model's dtype; their Linear layers quantized like the text
  model's under ``quantization_bit`` (LlamaFactory's BitsAndBytesConfig skips no module but the output head).
* vision activations, only when the tower trains (``freeze_vision_tower: false``): frozen, autograd keeps
  nothing for it and its forward's buffers are gone before the language model runs (measured:
  ../shared/research/vlm.md §3.3). Trained, each block keeps per patch 11 x hidden elements for attention
  (the two norms' inputs and outputs 4h, the fused qkv 3h, rotated q and k 2h, the attention output and its
  reshaped copy 2h) plus 3 x intermediate for a GELU MLP (fc1's output, the activation's intermediate and
  output; 4 x for a gated MLP). That is 23.0 x hidden per patch for Qwen2-VL-2B's ViT, where the research
  measured 23.05 (saved_tensors_hooks, act_mem.py); tests/models/test_vision.py measures the tiny Qwen2-VL
  the same way. With gradient checkpointing (LlamaFactory's default; transformers sets it on every
  sub-module, the ViT blocks too) each block keeps its input and one block is recomputed.
* projector activations, when the projector trains (``additional_target`` or projector targets): the input
  of each of its Linear layers, per image token.

The patches per sequence come from the data's images at ``image_max_pixels`` (lfgen.models.image_tokens).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lfgen.models.catalog import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from lfgen.models.memory import MemorySettings

ATTENTION_ELEMENTS = 11  # x hidden, per patch per block (see the module docstring)
MLP_ELEMENTS = {False: 3, True: 4}  # x intermediate: GELU (QuickGELU keeps its sigmoid too) / gated
_BLOCK = re.compile(r"^(.*?\.)(\d+)\.")


@dataclass(frozen=True)
class VisionTower:
    """What the memory model reads of a composite model's vision side."""

    params: int  # vision tower
    projector_params: int
    blocks: int
    hidden: int
    intermediate: int
    gated: bool
    linears: tuple[tuple[int, int, int], ...]  # (in, out, params) of every Linear of the tower and projector
    projector_inputs: int  # sum of the projector's Linear in_features

    @property
    def block_elements(self) -> int:
        """Elements one trained block keeps per patch for backward (no checkpointing)."""
        return ATTENTION_ELEMENTS * self.hidden + MLP_ELEMENTS[self.gated] * self.intermediate


@functools.cache
def tower(spec: ModelSpec) -> VisionTower:
    """The vision tower of *spec* from its meta skeleton (needs transformers)."""
    from lfgen.models.towers import skeleton

    sk = skeleton(spec)
    params = sk.tower_params()
    vision = [m for m in sk.modules if m.kind == "linear" and sk.composite.tower_of(m.path) == "vision"]
    projector = [m for m in sk.modules if m.kind == "linear" and sk.composite.tower_of(m.path) == "projector"]
    blocks: dict[str, list] = {}
    for m in vision:
        found = _BLOCK.match(m.path)
        if found:
            blocks.setdefault(found.group(1) + found.group(2), []).append(m)
    first = next(iter(blocks.values()), vision)
    hidden = Counter(m.in_features for m in first).most_common(1)[0][0] if first else 0
    intermediate = max((m.in_features for m in first), default=0)
    gated = sum(1 for m in first if m.in_features == hidden and m.out_features == intermediate) >= 2
    return VisionTower(params=params["vision"], projector_params=params["projector"], blocks=len(blocks),
                       hidden=hidden, intermediate=intermediate, gated=gated,
                       linears=tuple((m.in_features, m.out_features, m.params) for m in vision + projector),
                       projector_inputs=sum(m.in_features for m in projector))


def weight_bytes(spec: ModelSpec, s: MemorySettings, nf4_bits: float) -> tuple[float, int]:
    """Bytes of the vision tower's and projector's weights, and their largest quantized Linear (elements)."""
    vt = tower(spec)
    dense = 4 if s.compute_dtype == "fp32" and s.quantization_bit is None else 2
    total = (vt.params + vt.projector_params) * dense
    largest = 0
    if s.quantization_bit is not None:
        for fan_in, fan_out, params in vt.linears:
            weight = fan_in * fan_out
            per = weight + fan_out * 4 if s.quantization_bit == 8 else weight * nf4_bits / 8
            total += per + (params - weight) * 2 - params * dense
            largest = max(largest, weight)
    return total, largest


def trained(spec: ModelSpec, s: MemorySettings) -> dict[str, int]:
    """Trainable parameters per tower for the settings' keys (LlamaFactory's init_adapter, lfgen.models.towers)."""
    from lfgen.models.towers import count_towers

    return count_towers(spec, **s.model_dump()).trainable


def activation_bytes(spec: ModelSpec, s: MemorySettings, trainable: dict[str, int]) -> float:
    """What the vision tower and the projector keep for backward for one micro-batch, when they train
    (*trainable*: parameters per tower). A tower with nothing to train keeps nothing: no gradient flows into it."""
    if not s.image_patches:
        return 0.0
    vt = tower(spec)
    element = 4 if s.compute_dtype == "fp32" else 2
    patches = s.micro_batch * s.image_patches
    total = 0.0
    if trainable.get("vision") and vt.blocks:
        if s.gradient_checkpointing:
            total += (vt.blocks * vt.hidden + vt.block_elements) * patches * element
        else:
            total += vt.blocks * vt.block_elements * patches * element
    if trainable.get("projector"):
        total += vt.projector_inputs * s.micro_batch * s.image_tokens * element
    return total


def notes(spec: ModelSpec, s: MemorySettings, trainable: dict[str, int]) -> list[str]:
    """What the vision side adds, in words."""
    vt = tower(spec)
    said = [f"weights include the vision tower ({vt.params / 1e6:,.1f}M params) and the projector "
            f"({vt.projector_params / 1e6:,.1f}M)"]
    if not s.image_patches:
        said.append("no image size known: the vision tower's activations are not counted (give the data, or "
                    "image_max_pixels for one image per sample)")
    elif not trainable.get("vision"):
        said.append(f"{s.image_patches:,} vision patches per sample; nothing trains in the vision tower, so it "
                    "keeps no activations for backward (R-VLM-FREEZE)")
    else:
        said.append(f"{s.image_patches:,} vision patches per sample: the trained vision tower keeps "
                    f"{vt.blocks} blocks x {vt.hidden} wide of activations (freeze_vision_tower: false, R-VLM-PIXELS)")
    return said
