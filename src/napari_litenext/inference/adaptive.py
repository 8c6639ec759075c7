"""Post-processing that adapts to the objects of each image (``InferenceConfig.adaptive``).

A fixed minimum size cannot suit both 10 px nuclei and 100 px nuclei: a speck that is a whole
nucleus in one image is a fragment of noise in another. Here each 2D slice is judged by its own
objects: the typical object is the median area of the confident ones, and an object is dropped
when it is much smaller than that (unless the image edge cuts it), or when the network was sure
of none of it (its highest probability stays close to the threshold). The typical size also sets how deep a distance-transform
maximum must be to seed its own instance, so large nuclei are not split at small dents.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["remove_unlike", "seed_depth", "AREA_FRACTION", "MIN_CONFIDENCE", "SEED_FRACTION"]

# The three constants were chosen on the DSB 2018 validation split (grey and colour images) and a
# synthetic held-out type (enlarged, darkened, noisy crops of grey validation images) with the
# first nuclei model: F1@0.5 grey 0.849 -> 0.849, colour 0.632 -> 0.644, false-positive objects
# per colour image 4.4 -> 2.9; larger area fractions (0.1-0.2) removed true small nuclei next to
# large ones, and mean instead of peak probability removed small nuclei, which are mostly rim.
#: Objects smaller than this fraction of the typical object's area are removed.
AREA_FRACTION = 0.05
#: Objects whose peak probability lies less than this fraction of the way from the threshold to 1
#: are removed, whatever their size.
MIN_CONFIDENCE = 0.8
#: Confidence (same scale) an object needs to count towards the typical size.
_TYPICAL_CONFIDENCE = 0.5
#: Fewer confident objects than this give no typical size (too few to trust a median).
_MIN_OBJECTS = 3
#: A seed must stand this fraction of the typical object's radius above the saddle to its neighbour.
SEED_FRACTION = 0.1


def remove_unlike(mask: np.ndarray, probabilities: np.ndarray, threshold: float, min_size: int = 0) -> float | None:
    """Clear, in place, the objects of ``mask`` that are unlike the image's typical object.

    Args:
        mask: H x W bool, the thresholded (and hole-filled) probabilities; changed in place.
        probabilities: H x W foreground probabilities the mask came from.
        threshold: the threshold that made the mask (confidence is measured from it to 1).
        min_size: objects below this area never count towards the typical size.

    Returns:
        The typical object area in pixels (median area of the confident objects), or None when
        there are fewer than three of them; then only unsure objects are removed.
    """
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool), output=np.int32)
    if n == 0:
        return None
    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    # The peak, not the mean: a small nucleus is mostly rim, where probabilities ramp down to the
    # threshold, but its core is as sure as a large one's; a fragment of noise has no sure core.
    peak = np.zeros(n + 1)
    peak[1:] = ndi.maximum(probabilities, labels, np.arange(1, n + 1))
    confidence = (peak - threshold) / (1.0 - threshold)
    confident = (confidence >= _TYPICAL_CONFIDENCE) & (area >= max(1, min_size))
    confident[0] = False
    typical = float(np.median(area[confident])) if np.count_nonzero(confident) >= _MIN_OBJECTS else None
    drop = confidence < MIN_CONFIDENCE
    if typical is not None:
        # Objects cut by the image edge are judged by confidence only: their area says nothing.
        edge = np.zeros(n + 1, bool)
        edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
        drop |= (area < AREA_FRACTION * typical) & ~edge
    drop[0] = False
    if drop.any():
        mask[drop[labels]] = False
    return typical


def seed_depth(typical_area: float | None) -> float:
    """Least depth (pixels of distance) of a seed for objects of ``typical_area`` (0 if unknown)."""
    if not typical_area:
        return 0.0
    return SEED_FRACTION * math.sqrt(typical_area / math.pi)
