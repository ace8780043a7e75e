"""What the text counts (``lfgen.models.trainable``) and the per-tower counts (``lfgen.models.towers``) share:

* OFT's trainable parameters on one adapted Linear, as PEFT's OFT layer holds them: ``r`` blocks of
  ``b (b - 1) / 2`` parameters (a skew-symmetric b x b block each), with ``b = oft_block_size`` and
  ``r = in_features / b`` (or ``b = in_features / oft_rank``), PEFT's divisor adjustment included;
* the layers freeze tuning trains (LlamaFactory's ``_setup_freeze_tuning``).
"""

from __future__ import annotations

from lfgen.errors import InputError


def adjust(in_features: int, value: int) -> int:
    """PEFT's ``adjust_oft_parameters``: the divisor of in_features closest to *value*."""
    if value >= in_features:
        return in_features
    higher = value
    while higher <= in_features and in_features % higher:
        higher += 1
    lower = value
    while lower > 1 and in_features % lower:
        lower -= 1
    return lower if value - lower <= higher - value else higher


def oft_params(in_features: int, oft_rank: int = 0, oft_block_size: int = 32) -> int:
    """OFT parameters of one Linear with *in_features* inputs (exactly one of rank and block size is set)."""
    if oft_rank == 0:
        block = oft_block_size if in_features % oft_block_size == 0 and oft_block_size <= in_features \
            else adjust(in_features, oft_block_size)
        blocks = in_features // block
    else:
        blocks = oft_rank if in_features % oft_rank == 0 and oft_rank <= in_features else adjust(in_features, oft_rank)
        block = in_features // blocks
    return blocks * (block * (block - 1) // 2)


def trainable_layer_ids(num_layers: int, trainable_layers: int, use_llama_pro: bool = False) -> list[int]:
    """The layers freeze tuning trains (LlamaFactory's ``_setup_freeze_tuning``)."""
    if use_llama_pro:
        if trainable_layers == 0 or num_layers % trainable_layers != 0:
            raise InputError(f"freeze_trainable_layers: use_llama_pro needs a divisor of the {num_layers} layers "
                             f"(got {trainable_layers})")
        stride = num_layers // trainable_layers
        return list(range(stride - 1, num_layers + stride - 1, stride))
    if trainable_layers > 0:
        return list(range(max(0, num_layers - trainable_layers), num_layers))
    return list(range(min(-trainable_layers, num_layers)))
