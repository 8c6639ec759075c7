"""Overlapping tiles with smooth blending, and memory-frugal resizing: numpy only.

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

__all__ = ["Tile", "TileGrid", "tile_starts", "ramp_window", "block_mean", "resize_bilinear"]


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


def block_mean(image: np.ndarray, factor_y: int, factor_x: int, rows_per_chunk: int = 256) -> np.ndarray:
    """Average ``factor_y`` x ``factor_x`` blocks of a 2D or H x W x C image, as float32.

    Blocks at the bottom and right edges may be smaller (their mean is over the pixels they
    have). The image is read in chunks of rows, so no full-size float copy is ever made: memory is
    the output plus one chunk.

    Returns:
        ceil(H / factor_y) x ceil(W / factor_x) (x C) float32.
    """
    h, w = image.shape[:2]
    fy, fx = max(1, int(factor_y)), max(1, int(factor_x))
    if fy == 1 and fx == 1:
        return image.astype(np.float32)
    out_h, out_w = -(-h // fy), -(-w // fx)
    out = np.empty((out_h, out_w) + image.shape[2:], dtype=np.float32)
    col_starts = np.arange(0, w, fx)
    col_counts = np.minimum(fx, w - col_starts).astype(np.float32)
    col_counts = col_counts.reshape((-1,) + (1,) * (image.ndim - 2))
    blocks_per_chunk = max(1, rows_per_chunk // fy)
    for b0 in range(0, out_h, blocks_per_chunk):
        b1 = min(out_h, b0 + blocks_per_chunk)
        chunk = image[b0 * fy: min(h, b1 * fy)]
        row_starts = np.arange(0, chunk.shape[0], fy)
        sums = np.add.reduceat(chunk, row_starts, axis=0, dtype=np.float32)
        sums = np.add.reduceat(sums, col_starts, axis=1, dtype=np.float32)
        row_counts = np.minimum(fy, chunk.shape[0] - row_starts).astype(np.float32)
        sums /= row_counts.reshape((-1, 1) + (1,) * (image.ndim - 2))
        sums /= col_counts
        out[b0:b1] = sums
    return out


def resize_bilinear(image: np.ndarray, height: int, width: int, antialias: bool = True,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Resize a 2D or H x W x C image to ``height`` x ``width`` (float32, half-pixel centres).

    Shrinking by 2x or more first averages integer blocks (``block_mean``, reading the input in
    chunks of rows) so that the final bilinear step, anti-aliased, sees less than a 2x reduction:
    cheap and memory-frugal for huge images. Enlarging is plain bilinear (``align_corners=False``,
    edge-clamped), computed in chunks of rows straight into the output.

    Args:
        image: any real dtype; it is not modified.
        height, width: output size.
        antialias: low-pass filter when shrinking (as ``torch``'s ``antialias=True``).
        out: optional float32 array of the output shape to write into.

    Returns:
        ``out`` or a new float32 array, height x width (x C).
    """
    h, w = image.shape[:2]
    fy, fx = max(1, h // max(1, height)), max(1, w // max(1, width))
    if fy > 1 or fx > 1:
        image = block_mean(image, fy, fx)
    if image.shape[:2] == (height, width):
        result = image.astype(np.float32, copy=False)
    elif image.shape[0] >= height and image.shape[1] >= width and antialias:
        result = _shrink_torch(image, height, width)
    else:
        return _bilinear_rows(image, height, width, out=out)
    if out is None:
        return np.array(result, dtype=np.float32, copy=True)
    out[...] = result
    return out


def _shrink_torch(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # The input here is at most ~2x the (small) output, so torch's anti-aliased kernel is cheap.
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0]
    out = out[0] if image.ndim == 2 else out.permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def _axis_coords(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sample positions (half-pixel centres, edge-clamped): lower index, upper, weight."""
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _bilinear_rows(image: np.ndarray, height: int, width: int, rows_per_chunk: int = 512,
                   out: np.ndarray | None = None) -> np.ndarray:
    h, w = image.shape[:2]
    ylo, yhi, wy = _axis_coords(h, height)
    xlo, xhi, wx = _axis_coords(w, width)
    extra = (1,) * (image.ndim - 2)
    wx_b = wx.reshape((1, -1) + extra)
    if out is None:
        out = np.empty((height, width) + image.shape[2:], dtype=np.float32)
    for r0 in range(0, height, rows_per_chunk):
        r1 = min(height, r0 + rows_per_chunk)
        wy_b = wy[r0:r1].reshape((-1, 1) + extra)
        top = image[ylo[r0:r1]].astype(np.float32, copy=False)
        bottom = image[yhi[r0:r1]].astype(np.float32, copy=False)
        rows = top + (bottom - top) * wy_b  # (r1 - r0) x w
        left, right = rows[:, xlo], rows[:, xhi]
        out[r0:r1] = left + (right - left) * wx_b
    return out
