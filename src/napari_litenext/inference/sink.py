"""Where ``segment`` puts its outputs: whole arrays, or group by group into a store.

``WholeSink`` holds the full-size probability map and labels (in memory, or memory-mapped in a
``workdir``) and processes the whole stack as one group, as ``segment`` always did. ``StoreSink``
processes a few slices at a time (``GROUP_PIXELS``) in small buffers and writes each finished
group into destination arrays (a zarr store, see ``io.ngff.LabelStore``), so memory depends on
the group and tile sizes, not on the image.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["WholeSink", "StoreSink", "open_sink", "temporary_store_path", "GROUP_PIXELS", "LARGE_OUTPUT_BYTES"]

#: Pixels per group of slices in a ``StoreSink`` (at least one slice): 4 M pixels cost 32 MB of
#: float32 probabilities and int32 labels.
GROUP_PIXELS = 4 * 1024 * 1024
#: Outputs of a lazy input larger than this go to a zarr store rather than memory.
LARGE_OUTPUT_BYTES = 1 << 30


class WholeSink:
    """Full-size outputs; one group covering every slice.

    Args:
        allocate: ``allocate(name, shape, dtype)`` returns a zeroed array (see ``predict._allocate``).
        shape: stack shape + (H, W).
        label_dtype: uint8, or int32 for instances.
    """

    def __init__(self, allocate: Any, shape: tuple[int, ...], label_dtype: Any) -> None:
        self.probabilities = allocate("probabilities", shape, np.float32)
        self._allocate, self._label_dtype = allocate, label_dtype
        self._flat_prob = self.probabilities.reshape((-1,) + shape[-2:])
        self.labels: np.ndarray | None = None
        self.count = self._flat_prob.shape[0]

    def groups(self) -> list[tuple[int, int]]:
        """(first, end) flat slice ranges, in order."""
        return [(0, self.count)]

    def buffers(self, first: int, end: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The probability buffer of a group (N x H x W, zeroed) and its labels (allocated later)."""
        return self._flat_prob[first:end], None

    def label_buffer(self, first: int, end: int) -> np.ndarray:
        """Zeroed labels for the group, allocated once the probabilities are done (as before)."""
        self.labels = self._allocate("labels", self.probabilities.shape, self._label_dtype)
        return self.labels.reshape((-1,) + self.labels.shape[-2:])[first:end]

    def commit(self, first: int, end: int, prob: np.ndarray, labels: np.ndarray) -> None:
        """Nothing to copy: the buffers are the outputs."""

    def result(self) -> tuple[Any, Any]:
        return self.probabilities, self.labels


class StoreSink:
    """Groups of slices in small buffers, written into ``labels`` (and ``probabilities``) arrays.

    Args:
        labels: destination of the labels (zarr array or any writable array of the output shape).
        probabilities: destination of the float32 map, or None to drop it.
        label_dtype: uint8 or int32.
    """

    def __init__(self, labels: Any, probabilities: Any, label_dtype: Any) -> None:
        self.labels, self.probabilities, self._label_dtype = labels, probabilities, label_dtype
        self.shape = tuple(labels.shape)
        self.stack_shape = self.shape[:-2]
        self.count = math.prod(self.stack_shape)
        per_group = max(1, GROUP_PIXELS // max(1, math.prod(self.shape[-2:])))
        self._groups = [(i, min(self.count, i + per_group)) for i in range(0, self.count, per_group)]

    def groups(self) -> list[tuple[int, int]]:
        return self._groups

    def buffers(self, first: int, end: int) -> tuple[np.ndarray, None]:
        return np.zeros((end - first,) + self.shape[-2:], np.float32), None

    def label_buffer(self, first: int, end: int) -> np.ndarray:
        return np.zeros((end - first,) + self.shape[-2:], self._label_dtype)

    def commit(self, first: int, end: int, prob: np.ndarray, labels: np.ndarray) -> None:
        """Write the finished slices ``first..end`` into the destination arrays."""
        for offset, flat in enumerate(range(first, end)):
            index = np.unravel_index(flat, self.stack_shape) if self.stack_shape else ()
            index = tuple(int(i) for i in index)
            self.labels[index] = labels[offset]
            if self.probabilities is not None:
                self.probabilities[index] = prob[offset]

    def result(self) -> tuple[Any, Any]:
        return self.probabilities, self.labels


def temporary_store_path() -> str:
    """A path for a labels store in a new temporary folder (the caller removes the folder)."""
    return os.path.join(tempfile.mkdtemp(prefix="litenext-"), "labels.zarr")


def open_sink(out: Any, lazy: bool, shape: tuple[int, ...], label_dtype: Any, axes: str, allocate: Any,
              keep_probabilities: bool) -> tuple[WholeSink | StoreSink, Any]:
    """The sink for ``segment``'s outputs, and the ``LabelStore`` it fills (None for whole arrays).

    Args:
        out: None, a path for a new standalone labels store, or an ``io.ngff.LabelStore``.
        lazy: the input is lazy; its outputs then go to a temporary store when over
            ``LARGE_OUTPUT_BYTES``.
        shape: output shape (stack axes, H, W); label_dtype: uint8 or int32; axes: their letters.
        allocate: ``allocate(name, shape, dtype)`` for whole arrays (memory or ``workdir``).
        keep_probabilities: keep the float32 map in the store (else it is dropped).
    """
    from ..io.ngff import LabelStore

    if out is None:
        large = math.prod(shape) * (4 + np.dtype(label_dtype).itemsize) > LARGE_OUTPUT_BYTES
        if not (lazy and large):
            return WholeSink(allocate, shape, label_dtype), None
        out = temporary_store_path()
    store = out if isinstance(out, LabelStore) else LabelStore(out, name=os.path.basename(os.fspath(out)))
    store.create(shape, label_dtype, axes, probabilities=keep_probabilities)
    return StoreSink(store.labels, store.probabilities, label_dtype), store
