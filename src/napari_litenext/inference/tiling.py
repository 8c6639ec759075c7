"""Overlapping tiles with smooth blending (numpy only).

Tiles form a regular grid (the same start positions for every row and for every column), and
each tile is weighted by a separable window ``w_y(y) * w_x(x)``. The weights of all tiles covering
a pixel therefore sum to ``S_y(y) * S_x(x)``, the outer product of two 1-D sums: dividing each
tile's window by that product makes the weights a partition of unity (they sum to 1 at every
pixel, to float rounding) without a second full-size buffer. The window ramps up over the overlap
with a raised cosine and never reaches zero; on a side that lies on the image border it is flat,
so border pixels seen by one tile only get its full prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Tile", "TileGrid", "tile_starts", "ramp_window"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared.

    The tiles are spread evenly, so actual overlaps may exceed ``overlap`` by less than one stride;
    the first tile starts at 0 and the last ends at ``length``. A length not above ``tile`` gives
    one tile (the caller then uses a tile of size ``length``).
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def ramp_window(size: int, ramp_before: int, ramp_after: int) -> np.ndarray:
    """A 1-D window of ``size`` ones with raised-cosine ramps at its ends (float64).

    Args:
        size: window length.
        ramp_before / ramp_after: ramp lengths at the start / end (0: flat to the edge).

    The ramp samples a half cosine at pixel centres, ``0.5 - 0.5 cos(pi (i + 0.5) / (r + 1))``:
    strictly positive, so a pixel covered by one tile alone still gets a finite weight.
    """
    w = np.ones(size, dtype=np.float64)
    for r, sl in ((ramp_before, slice(None)), (ramp_after, slice(None, None, -1))):
        r = min(r, size)
        if r > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / (r + 1))
            view = w[sl]
            view[:r] = np.minimum(view[:r], ramp)
    return w


@dataclass(frozen=True)
class Tile:
    """One tile: its pixel ranges and its normalised 2-D weight as two 1-D factors.

    ``weight_y[:, None] * weight_x[None, :]`` is the tile's share of each pixel (float32); summed
    over all tiles it is 1 everywhere.
    """

    index: int
    y0: int
    y1: int
    x0: int
    x1: int
    weight_y: np.ndarray
    weight_x: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


class TileGrid:
    """A grid of overlapping tiles over an H x W image, with blending weights.

    Args:
        height, width: image size.
        tile_size: tile edge in pixels; a side of the image smaller than this gives tiles that
            span that side.
        overlap: pixels shared by neighbouring tiles (at least; see ``tile_starts``).
    """

    def __init__(self, height: int, width: int, tile_size: int, overlap: int) -> None:
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        overlap = max(0, min(overlap, tile_size - 1))
        self.height, self.width = height, width
        self.tile_h, self.tile_w = min(tile_size, height), min(tile_size, width)
        self.starts_y = tile_starts(height, self.tile_h, overlap)
        self.starts_x = tile_starts(width, self.tile_w, overlap)
        self._wy = self._axis_weights(self.starts_y, self.tile_h, height)
        self._wx = self._axis_weights(self.starts_x, self.tile_w, width)

    @staticmethod
    def _axis_weights(starts: list[int], tile: int, length: int) -> list[np.ndarray]:
        """Per-tile 1-D windows along one axis, divided by their sum over tiles."""
        windows = []
        for i, s in enumerate(starts):
            # Ramp over the actual overlap with each neighbour; none at the image border.
            before = starts[i - 1] + tile - s if i > 0 else 0
            after = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
            windows.append(ramp_window(tile, before, after))
        total = np.zeros(length, dtype=np.float64)
        for s, w in zip(starts, windows):
            total[s:s + tile] += w
        return [(w / total[s:s + tile]).astype(np.float32) for s, w in zip(starts, windows)]

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(height, width) shared by every tile."""
        return self.tile_h, self.tile_w

    def __len__(self) -> int:
        return len(self.starts_y) * len(self.starts_x)

    def __iter__(self) -> Iterator[Tile]:
        index = 0
        for iy, y in enumerate(self.starts_y):
            for ix, x in enumerate(self.starts_x):
                yield Tile(index, y, y + self.tile_h, x, x + self.tile_w, self._wy[iy], self._wx[ix])
                index += 1

    def accumulate(self, out: np.ndarray, tile: Tile, values: np.ndarray) -> None:
        """Add ``values`` (tile_h x tile_w float32, modified in place) weighted into ``out``.

        After every tile has been added once to a zeroed ``out``, ``out`` holds the blended map.
        """
        values *= tile.weight_y[:, None]
        values *= tile.weight_x[None, :]
        out[tile.slices] += values
