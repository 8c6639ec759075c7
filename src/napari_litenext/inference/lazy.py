"""Reading lazy arrays (dask, zarr, h5py, anything indexable) a region at a time.

``segment`` turns its input into an ``Arranged`` view: stack axes first, then Y, X, with the
channel already chosen, exactly like the numpy views it makes of in-memory images, except that
nothing is read until a region is asked for. Whole 2D slices are read once and reused while
their tiles are processed, when a slice is small enough (``SLICE_PIXELS``); larger slices are read
tile by tile, so each chunk of the source is read a bounded number of times and the whole array
never is.

The intensity range of a lazy image (``lazy_intensity_range``) comes from a bounded sample for
``"percentile"`` (at most 2 M values: the in-memory path's own sample, streamed a slice at a time,
up to ``EXACT_SAMPLE_PIXELS``; evenly spread blocks beyond), and from one streaming pass (each
block read once, one block in memory at a time) for ``"minmax"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..config import InferenceConfig
from ..errors import InputError
from .preprocess import intensity_range

__all__ = ["is_lazy", "as_source", "Arranged", "lazy_intensity_range", "SLICE_PIXELS", "EXACT_SAMPLE_PIXELS"]

#: 2D slices up to this many pixels are read whole (once) and tiled from memory: 64 MB of uint16.
SLICE_PIXELS = 32 * 1024 * 1024
#: Images up to this many pixels (2 GB of uint16) are sampled for percentiles exactly as in memory,
#: streaming one slice at a time; larger ones from evenly spaced blocks (``_SAMPLE_READ_PIXELS``).
EXACT_SAMPLE_PIXELS = 1 << 30
# Pixels read to estimate percentiles (a few slices or blocks) and values kept from them; the
# estimate is as exact as the in-memory path's strided subsample for images whose intensities do
# not drift sharply between the sampled slices.
_SAMPLE_READ_PIXELS = 16 * 1024 * 1024
_SAMPLE_KEEP = 2_000_000
# Edge of the square blocks a too-large 2D slice is read in for statistics.
_STAT_BLOCK = 2048


def is_lazy(array: Any) -> bool:
    """True for array-likes that are not numpy arrays (dask, zarr, h5py ...): read them lazily."""
    return not isinstance(array, np.ndarray) and all(hasattr(array, a) for a in ("shape", "dtype", "__getitem__"))


def as_source(image: Any) -> Any:
    """``image`` unchanged when it is a numpy array (memory maps included) or lazy; else ``np.asarray``."""
    if isinstance(image, np.ndarray) or is_lazy(image):
        return image
    return np.asarray(image)


class Arranged:
    """A lazy view of ``source`` with axes reordered and the channel chosen.

    Args:
        source: the input array (any object with ``shape``, ``dtype`` and basic indexing).
        order: source axis for each arranged axis (stack axes, Y, X, then C if any).
        channel_key: how the last arranged axis (C) is indexed: an int (one channel), a slice
            (RGB without alpha), or None when there is no channel axis.

    ``view[key]`` with one int per stack axis and slices for Y and X returns a numpy array of the
    arranged shape of that region (channels last).
    """

    def __init__(self, source: Any, order: list[int], channel_key: int | slice | None) -> None:
        self.source, self.order, self.channel_key = source, list(order), channel_key
        n_plain = len(order) - (channel_key is not None)
        self.plain_order = self.order[:n_plain]
        shape = [int(source.shape[a]) for a in self.plain_order]
        if isinstance(channel_key, slice):
            shape.append(len(range(*channel_key.indices(int(source.shape[self.order[-1]])))))
        self.shape = tuple(shape)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        self.stack_ndim = n_plain - 2
        self._cached: tuple[tuple[int, ...], np.ndarray] | None = None

    @property
    def slice_shape(self) -> tuple[int, ...]:
        """Shape of one 2D slice (H, W[, C])."""
        return self.shape[self.stack_ndim:]

    def read(self, key: tuple) -> np.ndarray:
        """The pixels at ``key`` (ints for stack axes, then Y and X slices) as a numpy array."""
        source_key: list[Any] = [slice(None)] * len(self.source.shape)
        for axis, k in zip(self.plain_order, key):
            source_key[axis] = k
        if self.channel_key is not None:
            source_key[self.order[-1]] = self.channel_key
        region = np.asarray(self.source[tuple(source_key)])
        # The axes left after integer indexing, in source order; put them in arranged order.
        kept = [a for a, k in zip(self.plain_order, key) if not isinstance(k, (int, np.integer))]
        kept += [a for a in self.plain_order[len(key):]]
        if isinstance(self.channel_key, slice):
            kept.append(self.order[-1])
        by_source = sorted(kept)
        region = region.transpose([by_source.index(a) for a in kept])
        if region.dtype.kind == "f" and not np.isfinite(region).all():
            raise InputError("image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first")
        return region

    def __getitem__(self, key: tuple) -> np.ndarray:
        """``read``, reusing the whole slice when it is small enough to keep in memory."""
        stack = tuple(int(k) for k in key[:self.stack_ndim])
        if math.prod(self.slice_shape[:2]) > SLICE_PIXELS:
            return self.read(key)
        if self._cached is None or self._cached[0] != stack:
            self._cached = None  # release the previous slice before reading the next
            self._cached = (stack, self.read(stack + (slice(None), slice(None))))
        return self._cached[1][tuple(key[self.stack_ndim:])]

    def blocks(self) -> Iterator[tuple]:
        """Keys covering the whole view: one per 2D slice, or per block of a too-large slice."""
        height, width = self.slice_shape[:2]
        whole = height * width <= SLICE_PIXELS
        step_y = height if whole else _STAT_BLOCK
        step_x = width if whole else _STAT_BLOCK
        for stack in np.ndindex(*self.shape[:self.stack_ndim]):
            for y in range(0, height, step_y):
                for x in range(0, width, step_x):
                    yield tuple(int(i) for i in stack) + (slice(y, min(height, y + step_y)),
                                                          slice(x, min(width, x + step_x)))


def lazy_intensity_range(view: Arranged, inference: InferenceConfig) -> tuple[float, float]:
    """``intensity_range`` of a lazy image without reading it all at once.

    ``"dtype"`` reads nothing for 8/16-bit integers and a sample for floats (to check that values are
    finite; every region read later is checked too); ``"percentile"``
    keeps at most 2 M values (see ``_sample``); ``"minmax"`` (and ``"dtype"`` for
    32/64-bit integers, which uses the image's own range) reads every block once, one at a time.

    Raises:
        InputError: as ``intensity_range``.
    """
    dtype = view.dtype
    if math.prod(view.shape) == 0:
        raise InputError("image is empty")
    if dtype == bool:
        return 0.0, 1.0
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"image has dtype {dtype}; convert it to an integer or float image")
    if inference.normalisation == "dtype" and np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2:
        return intensity_range(np.zeros(1, dtype), inference)  # the type's range: nothing to read
    full_pass = inference.normalisation == "minmax" or (
        inference.normalisation == "dtype" and np.issubdtype(dtype, np.integer) and dtype.itemsize > 2)
    if full_pass:
        lo, hi = math.inf, -math.inf
        for key in view.blocks():
            block = view.read(key)
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        return intensity_range(np.array([lo, hi], dtype=np.float64), inference.with_overrides(normalisation="minmax"))
    return intensity_range(_sample(view), inference)


def _sample(view: Arranged) -> np.ndarray:
    """At most ``_SAMPLE_KEEP`` values: the in-memory path's sample when affordable, else evenly spaced blocks.

    Up to ``EXACT_SAMPLE_PIXELS`` the values are those ``preprocess`` takes from a numpy array of
    the same pixels (every ``step``-th pixel in C order), read one slice at a time, so that a TIFF
    and a zarr copy of a stack get the same range and so the same labels. Larger images, channel
    views and transposed axes (whose numpy views sample otherwise) read whole blocks, evenly spread.
    """
    from . import preprocess

    total, per_slice = math.prod(view.shape), math.prod(view.slice_shape)
    if (view.channel_key is None and view.order == sorted(view.order) and per_slice <= SLICE_PIXELS
            and total <= EXACT_SAMPLE_PIXELS):
        step = max(1, total // preprocess._PERCENTILE_SAMPLE)
        # copies: a strided view would keep each whole slice alive until the end
        parts = [view.read(key).reshape(-1)[-(n * per_slice) % step::step].copy()
                 for n, key in enumerate(view.blocks())]
        return np.concatenate(parts)
    keys = list(view.blocks())
    count = max(1, min(len(keys), _SAMPLE_READ_PIXELS // max(1, _key_pixels(keys[0], view))))
    chosen = [keys[round(i * (len(keys) - 1) / (count - 1))] for i in range(count)] if count > 1 else keys[:1]
    keep_each = max(1, _SAMPLE_KEEP // len(chosen))
    parts = []
    for key in chosen:
        flat = view.read(key).reshape(-1)
        parts.append(flat[:: max(1, flat.size // keep_each)].copy())
    return np.concatenate(parts)


def _key_pixels(key: tuple, view: Arranged) -> int:
    ys, xs = key[view.stack_ndim:view.stack_ndim + 2]
    return (ys.stop - ys.start) * (xs.stop - xs.start) * (view.shape[-1] if isinstance(view.channel_key, slice) else 1)
