"""Training losses: soft Dice + BCE, and the Marginal Weight Loss (MWL) of the LiteNeXt paper.

All losses take raw logits ``B x 1 x H x W`` and a target of the same shape holding {0, 1} (any
dtype; it is compared with 0.5 where a binary mask is needed) and return a scalar.

MWL weights the per-pixel BCE by a map built from the target: with dilation D and erosion E of
the mask by a k x k square (both with zero padding, so objects touching the image border are eroded
there too), the object core O = E gets ``w_o``, the margin band M = D - E (k - 1 pixels wide,
straddling the contour) gets ``w_m`` and the background B = 1 - D gets ``w_b``.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LOSSES, MWL_PRESETS, LossConfig

__all__ = ["dice_loss", "bce", "margin_weight_map", "SegmentationLoss", "MarginalWeightLoss",
           "build_loss", "MWL_PRESETS", "LOSSES", "DICE_SMOOTH"]

# Added to numerator and denominator of each image's Dice: an image with empty ground truth and an
# all-background prediction scores loss 0 instead of 0/0, and it is negligible next to the
# thousands of foreground pixels of a 256 x 256 training image.
DICE_SMOOTH = 1.0

_BOUNDARY = MWL_PRESETS["boundary"]


def _check_pair(logits: Tensor, target: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError("logits and target must be torch tensors")
    if logits.ndim != 4:
        raise ValueError(f"logits must be B x 1 x H x W, got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from logits shape "
                         f"{tuple(logits.shape)}; give one B x 1 x H x W mask per prediction")


def dice_loss(probabilities: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """Soft Dice loss: 1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s) per image, mean over the batch.

    Args:
        probabilities: B x ... in [0, 1] (sigmoid of the logits).
        target: same shape, {0, 1}.
        smooth: s above, > 0.

    Raises:
        ValueError: shapes differ or ``smooth`` is not positive.
    """
    if probabilities.shape != target.shape:
        raise ValueError(f"probabilities shape {tuple(probabilities.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    p = probabilities.float().flatten(1)
    y = target.to(p.dtype).flatten(1)
    inter = (p * y).sum(1)
    score = (2.0 * inter + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return (1.0 - score).mean()


def bce(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits, averaged over all pixels, optionally weighted per pixel.

    Args:
        logits: any shape.
        target: same shape, {0, 1}.
        weight: same shape or broadcastable; multiplies each pixel's loss before the mean.
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.to(torch.float32), reduction="none")
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.mean()


def _check_kernel(kernel_size: Any) -> int:
    try:
        k = operator.index(kernel_size) if not isinstance(kernel_size, bool) else None
    except TypeError:
        k = None
    if k is None or k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer (e.g. 7), got {kernel_size!r}; "
                         "an even kernel has no centre pixel")
    return k


def _check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def margin_weight_map(mask: Tensor, kernel_size: int = 7, w_b: float = 1.0, w_o: float = 3.0,
                      w_m: float = 6.0) -> Tensor:
    """Per-pixel MWL weights ``w_o * O + w_m * M + w_b * B`` (no gradient).

    Args:
        mask: B x C x H x W ground truth; values > 0.5 are foreground.
        kernel_size: odd edge of the square structuring element; the margin band is
            ``kernel_size - 1`` pixels wide.
        w_b, w_o, w_m: weights of background, object core and margin band (>= 0).

    Returns:
        float32 tensor shaped like ``mask``, on its device, with ``requires_grad=False``.

    Raises:
        ValueError: ``mask`` is not 4D, the kernel is not odd and positive, or a weight is negative.
    """
    k = _check_kernel(kernel_size)
    w_b, w_o, w_m = (_check_weight(n, v) for n, v in (("w_b", w_b), ("w_o", w_o), ("w_m", w_m)))
    if not isinstance(mask, Tensor) or mask.ndim != 4:
        raise ValueError(f"mask must be a B x C x H x W tensor, got {getattr(mask, 'shape', type(mask))}")
    with torch.no_grad():
        y = (mask.detach() > 0.5).to(torch.float32)
        r = k // 2
        # max_pool2d pads with -inf, which for a max over values in {0, 1} acts as zero padding.
        dilated = F.max_pool2d(y, k, stride=1, padding=r)
        # erosion = 1 - dilation of the complement; zero padding of y is padding of ones for 1 - y,
        # so pad explicitly (max_pool2d's own -inf padding would make border objects survive).
        eroded = 1.0 - F.max_pool2d(F.pad(1.0 - y, (r, r, r, r), value=1.0), k, stride=1)
        margin = dilated - eroded
        return w_o * eroded + w_m * margin + w_b * (1.0 - dilated)


class SegmentationLoss(nn.Module):
    """Soft Dice + (unweighted) BCE on logits, the paper's baseline loss.

    ``forward(logits, target) -> scalar``; ``components(logits, target)`` returns the parts
    ``{"loss", "bce", "dice"}`` (only ``"loss"`` carries the graph) and ``forward`` keeps them,
    detached, in ``last_components`` for logging without an extra device sync.
    """

    name = "dice_bce"

    def __init__(self, smooth: float = DICE_SMOOTH) -> None:
        super().__init__()
        if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real) or not smooth > 0:
            raise ValueError(f"smooth must be a number > 0, got {smooth!r}")
        self.smooth = float(smooth)
        self.last_components: dict[str, Tensor] = {}

    def weight_map(self, target: Tensor) -> Tensor | None:
        """Per-pixel BCE weights; None means all ones."""
        return None

    def components(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The loss and its parts for ``logits`` and ``target`` (both B x 1 x H x W).

        Raises:
            ValueError: the tensors are not 4D or differ in shape.
        """
        _check_pair(logits, target)
        # the target is data: no gradient may reach it even if the caller built it from a graph
        target = target.detach().to(torch.float32)
        bce_part = bce(logits, target, self.weight_map(target))
        dice_part = dice_loss(torch.sigmoid(logits.float()), target, self.smooth)
        return {"loss": bce_part + dice_part, "bce": bce_part, "dice": dice_part}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        parts = self.components(logits, target)
        self.last_components = {k: v.detach() for k, v in parts.items()}
        return parts["loss"]

    @property
    def settings(self) -> dict[str, Any]:
        """JSON-compatible description, e.g. for a model card's recipe."""
        return {"name": self.name, "smooth": self.smooth}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items() if k != "name")


class MarginalWeightLoss(SegmentationLoss):
    """Marginal Weight Loss: ``mean(W * BCE(z, Y)) + softDice(sigmoid(z), Y)``.

    Args:
        w_b, w_o, w_m: background, object-core and margin weights (defaults: the "boundary"
            preset of ``LossConfig``, 1, 3, 6).
        kernel_size: odd structuring-element edge (7).
        smooth: Dice smoothing term.

    Raises:
        ValueError: even or non-positive kernel, negative or non-finite weight.
    """

    name = "mwl"

    def __init__(self, w_b: float = _BOUNDARY["w_b"], w_o: float = _BOUNDARY["w_o"], w_m: float = _BOUNDARY["w_m"],
                 kernel_size: int = int(_BOUNDARY["kernel_size"]), smooth: float = DICE_SMOOTH) -> None:
        super().__init__(smooth)
        self.kernel_size = _check_kernel(kernel_size)
        self.w_b = _check_weight("w_b", w_b)
        self.w_o = _check_weight("w_o", w_o)
        self.w_m = _check_weight("w_m", w_m)

    def weight_map(self, target: Tensor) -> Tensor:
        return margin_weight_map(target, self.kernel_size, self.w_b, self.w_o, self.w_m)

    @property
    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "w_b": self.w_b, "w_o": self.w_o, "w_m": self.w_m,
                "kernel_size": self.kernel_size, "smooth": self.smooth}


def build_loss(config: LossConfig | None = None) -> SegmentationLoss:
    """The segmentation loss a ``LossConfig`` describes, with its values passed unchanged.

    Args:
        config: the objective; None is ``LossConfig()`` (MWL, boundary preset).

    Raises:
        ValueError: ``config`` is not a LossConfig.
    """
    config = LossConfig() if config is None else config
    if not isinstance(config, LossConfig):
        raise ValueError(f"build_loss takes a LossConfig, got {type(config).__name__}")
    if config.loss == "mwl":
        return MarginalWeightLoss(config.w_b, config.w_o, config.w_m, config.kernel_size)
    return SegmentationLoss()
