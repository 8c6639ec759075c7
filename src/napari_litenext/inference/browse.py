"""Segmenting the slice on show: one 2D slice of a lazy stack on demand ("segment as I browse").

``SliceSegmenter`` reads only the slice asked for (a dask, zarr or numpy stack of any size),
normalises it with the intensity range of the *whole* stack (computed once from a bounded sample,
so a slice looks the same whether it is segmented alone or in a full run) and returns its labels.
With ``labels`` (e.g. ``io.ngff.temporary_label_store(...).labels``, a zarr array behind a napari
Labels layer) each result is also written into its place there.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..progress import Progress, run_to_end
from .layout import arrange
from .predict import Prediction, segment

__all__ = ["SliceSegmenter"]


class SliceSegmenter:
    """Segment single slices of a stack, one call each.

    Args:
        image: a stack (numpy, memory map, dask, zarr); nothing is read until a slice is asked for.
        model: a loaded LiteNeXt.
        axes, channel: as ``segment`` (inferred when None).
        labels: an array of the labels' full shape (stack axes + Y, X) to write each slice into,
            or None.
        settings: ``segment``'s other keyword arguments (``instances``, ``threshold``, ``mode``, ...).

    Raises:
        InputError: as ``segment`` (checked here, before any slice is read).
    """

    def __init__(self, image: Any, model: Any, *, axes: str | None = None, channel: int | None = None,
                 labels: Any = None, **settings: Any) -> None:
        self.layout = arrange(image, axes, channel)
        self.model, self.channel, self.labels, self.settings = model, channel, labels, settings
        self.shape = self.layout.stack_shape + (self.layout.height, self.layout.width)
        self._range: tuple[float, float] | None = None
        keep = ("threshold", "instances", "min_size", "mode", "tile_size", "tile_overlap")
        self.inference = model.inference.with_overrides(**{k: v for k, v in settings.items() if k in keep})

    @property
    def value_range(self) -> tuple[float, float]:
        """The whole stack's intensity range (computed on first use)."""
        if self._range is None:
            self._range = self.layout.intensity_range(self.inference)
        return self._range

    def segment(self, index: tuple[int, ...], should_stop: Callable[[], bool] | None = None
                ) -> Generator[Progress, None, Prediction]:
        """Segment the slice at ``index`` (one int per stack axis), yielding progress; returns its ``Prediction``.

        Raises:
            IndexError: ``index`` does not name a slice of the stack.
            Cancelled: ``should_stop()`` returned True.
        """
        stack = self.layout.stack_shape
        index = tuple(int(i) for i in index)
        if len(index) != len(stack) or any(not 0 <= i < n for i, n in zip(index, stack)):
            raise IndexError(f"slice {index} is not in a stack of shape {stack}")
        pixels = np.asarray(self.layout.pixels[index + (slice(None), slice(None))])
        axes = "YXC" if pixels.ndim == 3 else "YX"
        prediction = yield from segment(pixels, self.model, axes=axes, value_range=self.value_range,
                                        should_stop=should_stop, **self.settings)
        if self.labels is not None:
            self.labels[index] = prediction.labels
        return prediction

    def __call__(self, index: tuple[int, ...]) -> Prediction:
        """``segment`` run to its end."""
        return run_to_end(self.segment(index))
