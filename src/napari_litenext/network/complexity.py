"""Complexity of a LiteNeXt network: multiply-accumulates (MACs) per image.

The count follows the paper's convention (and the common profilers'): every convolution and linear
layer contributes ``output elements x (inputs per output + 1)``, the bias counting as one MAC per
output element; LayerNorm, GELU, pooling, softmax, upsampling and additions are not counted. It is
the count of the DIRECT network as the paper draws it, e.g. the 256 -> 16 conv after the fusion
is counted at H/2 on 256 channels, even though ``LiteNeXt.forward`` computes an equal result with
far fewer operations. With the default configuration at 256 x 256 this gives 417,452,784 MACs, the
paper's "0.42 GFLOPs".

The counter walks the model's convolution and linear modules and assigns each the resolution at
which the direct network runs it, so it follows any ``ModelConfig`` (widths, kernel size, depths,
fusion width). A module it cannot place raises ``RuntimeError`` instead of being miscounted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..config import ModelConfig

if TYPE_CHECKING:  # torch is imported lazily: importing the package must stay torch-free
    from .model import LiteNeXt

__all__ = ["count_macs", "mac_breakdown"]


def _build(model_or_config: LiteNeXt | ModelConfig | None) -> LiteNeXt:
    import torch

    from .model import LiteNeXt

    if isinstance(model_or_config, LiteNeXt):
        return model_or_config
    if model_or_config is None or isinstance(model_or_config, ModelConfig):
        # Only the module shapes matter: build on the meta device so that wide configurations
        # cost no memory.
        with torch.device("meta"):
            return LiteNeXt(model_or_config or ModelConfig())
    raise TypeError(f"expected a LiteNeXt or a ModelConfig, got {type(model_or_config).__name__}")


def _padded(size: int, name: str) -> int:
    from .model import MIN_SIZE, STRIDE

    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"{name} must be an integer >= {MIN_SIZE}, got {size!r}")
    return -(-int(size) // STRIDE) * STRIDE


def mac_breakdown(model_or_config: LiteNeXt | ModelConfig | None = None, height: int = 256,
                  width: int = 256) -> dict[str, int]:
    """MACs per image of each top-level part of the direct network.

    Args:
        model_or_config: a ``LiteNeXt`` or the ``ModelConfig`` of one; ``None`` is the paper's.
        height, width: input size in pixels (>= 16); sizes that are not multiples of 16 are
            counted at the padded size the network actually runs at.

    Returns:
        Part name (``stem``, ``stages``, ``bottleneck``, ``fusion``, ``up``, ``head``) -> MACs, in
        network order.

    Raises:
        ValueError: height or width below 16 or not an integer.
        TypeError: ``model_or_config`` is neither a LiteNeXt nor a ModelConfig.
        RuntimeError: the model holds a convolution or linear layer this counter cannot place.
    """
    from torch import nn

    model = _build(model_or_config)
    h, w = _padded(height, "height"), _padded(width, "width")
    n_stages = len(model.stages)

    def pixels(level: int) -> int:
        """Pixels of a map at 1 / 2**level of the (padded) input."""
        return (h >> level) * (w >> level)

    def placement(name: str) -> tuple[str, int]:
        """(part, positions per image) at which the direct network applies module ``name``."""
        if name.startswith("stem."):
            return "stem", pixels(1)
        if m := re.match(r"stages\.(\d+)\.", name):
            return "stages", pixels(int(m[1]) + 1)
        if name.startswith("bottleneck."):
            return "bottleneck", pixels(n_stages)
        if m := re.match(r"fusion\.units\.(\d+)\.(value|key_in|key_out)\b", name):
            if m[2] != "value":  # the key MLP acts on one pooled vector per image
                return "fusion", 1
            return "fusion", pixels(min(int(m[1]), n_stages - 1) + 1)  # the last unit reads d4
        if name == "fusion.score":  # one score per encoder scale, each from (k_i, k_d4)
            return "fusion", n_stages
        if name.startswith("up."):
            return "up", pixels(1)
        if name == "head":
            return "head", pixels(0)
        raise RuntimeError(f"count_macs does not know where module {name!r} runs; update "
                           "napari_litenext.network.complexity for the changed architecture")

    parts = dict.fromkeys(("stem", "stages", "bottleneck", "fusion", "up", "head"), 0)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            per_output = module.in_channels // module.groups * k_h * k_w
            outputs = module.out_channels
        elif isinstance(module, nn.Linear):
            per_output, outputs = module.in_features, module.out_features
        else:
            continue
        part, positions = placement(name)
        parts[part] += positions * outputs * (per_output + (module.bias is not None))
    return parts


def count_macs(model_or_config: LiteNeXt | ModelConfig | None = None, height: int = 256,
               width: int = 256) -> int:
    """Multiply-accumulates per image of the direct LiteNeXt network (paper's convention).

    Args:
        model_or_config: a ``LiteNeXt`` or the ``ModelConfig`` of one; ``None`` is the paper's.
        height, width: input size in pixels (>= 16); sizes that are not multiples of 16 are
            counted at the padded size the network runs at.

    Returns:
        The MAC count; 417,452,784 for the paper's configuration at 256 x 256.

    Raises:
        ValueError, TypeError, RuntimeError: as ``mac_breakdown``.
    """
    return sum(mac_breakdown(model_or_config, height, width).values())
