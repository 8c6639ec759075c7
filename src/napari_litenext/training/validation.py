"""Validation during training: the model segments each held-out image exactly as ``predict`` would
(its own normalisation, tiles or resize, threshold, hole filling and minimum size), and the labels
are scored with ``metrics.binary_scores``, so the Dice that picks the best checkpoint is the Dice a
user gets from ``napari-litenext evaluate`` on the same images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..inference.predict import predict
from ..inference.resize import resize_keep_dtype
from ..metrics import binary_scores
from .data import Sample

if TYPE_CHECKING:  # pragma: no cover
    from ..network.model import LiteNeXt

__all__ = ["validation_images", "validate"]


def validation_images(samples: Sequence[Sample], mode: str, size: int) -> list[Sample]:
    """The pairs validation scores: in ``"resize"`` mode resized once to ``size`` x ``size`` (the
    paper's protocol, pixel type kept so normalisation is unchanged), else as they are."""
    if mode != "resize":
        return list(samples)
    return [Sample(resize_keep_dtype(s.image, size, size), resize_keep_dtype(s.mask, size, size), s.name)
            for s in samples]


def validate(model: LiteNeXt, samples: Sequence[Sample]) -> float | None:
    """Mean Dice of the model's labels against the masks; pairs with empty masks are skipped.

    Args:
        model: the network being trained, carrying the ``inference`` settings it will be saved with;
            it is put in eval mode for the call and handed back in the mode it came in.
        samples: validation pairs (``validation_images``).

    Returns:
        The mean Dice, or None when every mask is empty.
    """
    scores = []
    for sample in samples:
        if not sample.mask.any():
            continue
        labels = predict(sample.image, model, instances=False).labels
        scores.append(binary_scores(labels > 0, sample.mask)["dice"])
    return float(np.mean(scores)) if scores else None
