"""From the pixels users have to the network's input: 3 channels of float32 in [0, 1].

Training and inference both go through these functions, so a model sees at inference exactly the
intensities it was trained on; the choice is stored in each checkpoint's ``InferenceConfig``.

The intensity range is computed once per image (``intensity_range``) and applied per tile
(``apply_range``), so an image far larger than memory allows in float32 can be normalised tile by
tile with the statistics of the whole image.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..config import InferenceConfig

__all__ = ["InputError", "select_channels", "intensity_range", "apply_range", "to_network_input"]

# Percentiles of huge images are estimated on a strided subsample of about this many pixels:
# exact enough (the estimate of the 99.8th percentile moves by far less than one grey level) and
# it avoids sorting a copy of a multi-gigabyte array.
_PERCENTILE_SAMPLE = 2_000_000
# More values than this along the last axis reads as a stack of planes rather than channels
# (predict's smallest image edge).
_STACK_DEPTH = 16




def select_channels(image: np.ndarray, channel: int | None = None) -> np.ndarray:
    """Reduce a 2D image to H x W (grayscale) or H x W x 3 (RGB), without copying pixels.

    Args:
        image: H x W, or H x W x C with channels last.
        channel: for multichannel images, the index of the channel to segment. Required when C is
            2 or more than 4; with C == 3 or 4 (RGB, RGBA) it picks one channel instead of colour.

    Returns:
        A view of ``image``: H x W or H x W x 3 (alpha dropped).

    Raises:
        InputError: wrong dimensionality, a channel index out of range, or an ambiguous channel count.
    """
    if image.ndim == 2:
        if channel not in (None, 0):
            raise InputError(f"channel={channel} given for a single-channel image; leave channel unset")
        return image
    if image.ndim != 3:
        # Not "give axes=": training and evaluation, which call this, take 2D images only.
        raise InputError(f"expected a 2D image (H x W or H x W x C), got shape {image.shape}; "
                         "give each 2D plane of a stack as an image of its own")
    n = image.shape[2]
    if channel is not None:
        if not -n <= channel < n:
            raise InputError(f"channel={channel} is out of range for an image with {n} channels")
        return image[:, :, channel]
    if n == 1:
        return image[:, :, 0]
    if n in (3, 4):
        return image[:, :, :3]
    if n >= _STACK_DEPTH:
        raise InputError(f"image of shape {image.shape} has {n} values along its last axis: if it is a stack, "
                         f"give each 2D plane as an image of its own; if they are channels, choose one with "
                         f"channel=<0..{n - 1}>")
    raise InputError(f"image has {n} channels; choose one to segment with channel=<0..{n - 1}>")


def intensity_range(image: np.ndarray, inference: InferenceConfig) -> tuple[float, float]:
    """The raw values that ``apply_range`` maps to 0 and 1, per ``inference.normalisation``.

    Args:
        image: any shape; all values count (channels together, so colour balance is kept).
        inference: supplies ``normalisation`` and ``percentiles``.

    Raises:
        InputError: the image is empty, not numeric, or holds NaN or infinite values.
    """
    if image.size == 0:
        raise InputError("image is empty")
    if image.dtype == bool:
        return 0.0, 1.0
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"image has dtype {image.dtype}; convert it to an integer or float image")
    if np.issubdtype(image.dtype, np.floating) and not _all_finite(image):
        raise InputError("image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first")
    mode = inference.normalisation
    if mode == "dtype" and np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize > 2:
        # 32/64-bit integer images (often labels or converted data) never use their type's range:
        # dividing by 2**31 would make them black, so their own range is used instead.
        mode = "minmax"
    if mode == "dtype":
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            return (float(info.min) if info.min < 0 else 0.0), float(info.max)
        return 0.0, 1.0
    if mode == "minmax":
        lo, hi = float(image.min()), float(image.max())
    else:
        lo, hi = (float(v) for v in np.percentile(_subsample(image), inference.percentiles))
    if hi <= lo:  # a constant image: map it to 0 rather than divide by zero
        hi = lo + 1.0
    return lo, hi


def _subsample(image: np.ndarray) -> np.ndarray:
    """About ``_PERCENTILE_SAMPLE`` values of ``image``, without copying the whole array.

    ``ravel`` of a non-contiguous view (a channel of an RGB image, a transposed stack) would copy
    every pixel, so the stride is taken along the first axis before flattening.
    """
    step = max(1, image.size // _PERCENTILE_SAMPLE)
    if image.flags.c_contiguous:
        return image.reshape(-1)[::step]
    rows = image[:: min(step, image.shape[0])] if image.ndim > 1 else image[::step]
    flat = rows.ravel()
    return flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]


def _all_finite(image: np.ndarray) -> bool:
    # Blocks of leading-axis slices (views, even of non-contiguous arrays) keep the temporary
    # boolean array small for huge images.
    if image.ndim == 0:
        return bool(np.isfinite(image))
    per_row = max(1, image.size // max(1, image.shape[0]))
    step = max(1, 4_000_000 // per_row)
    return all(np.isfinite(image[i:i + step]).all() for i in range(0, image.shape[0], step))


def apply_range(image: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Map [lo, hi] to [0, 1] (clipped) as float32; 1 - x where ``invert``."""
    out = image.astype(np.float32, copy=True)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    if invert:
        np.subtract(1.0, out, out=out)
    return out


def to_network_input(image: np.ndarray, inference: InferenceConfig, channel: int | None = None,
                     value_range: tuple[float, float] | None = None) -> np.ndarray:
    """One 2D image as the network reads it.

    Args:
        image: H x W or H x W x C (see ``select_channels``).
        inference: normalisation settings.
        channel: channel to segment in a multichannel image.
        value_range: (lo, hi) computed beforehand on the whole image, for tiles of it.

    Returns:
        3 x H x W float32 in [0, 1]; grayscale is replicated to three channels.
    """
    image = select_channels(image, channel)
    lo, hi = value_range if value_range is not None else intensity_range(image, inference)
    out = apply_range(image, lo, hi, inference.invert)
    if out.ndim == 2:
        return np.broadcast_to(out, (3,) + out.shape).copy()
    return np.ascontiguousarray(out.transpose(2, 0, 1))
