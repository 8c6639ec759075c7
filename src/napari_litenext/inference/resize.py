"""Resizing images: the one anti-aliased bilinear resize used by inference, training and evaluation.

``resize_bilinear`` returns float32 and never makes a full-size float copy of a huge input (it
averages integer blocks first, in chunks of rows); ``resize_keep_dtype`` wraps it for images that
must keep their pixel type (so that dtype normalisation still applies: the paper's protocol and
validation in resize mode), rounding integers and thresholding booleans at 0.5.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_mean", "resize_bilinear", "resize_keep_dtype"]


def resize_keep_dtype(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``resize_bilinear`` of an H x W (x C) image, returned in the input's dtype.

    Integers are rounded and clipped to their type's range; booleans are ``>= 0.5``; floats keep
    their precision.
    """
    out = resize_bilinear(image.view(np.uint8) if image.dtype == bool else image, height, width)
    if image.dtype == bool:
        return out >= 0.5
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(image.dtype, copy=False)


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
