"""The one resize of the package: float32 bilinear, and the dtype-keeping wrapper."""

import numpy as np
import pytest

from napari_litenext.inference.resize import block_mean, resize_bilinear, resize_keep_dtype


def test_block_mean_exact_and_partial_blocks():
    a = np.arange(7 * 5, dtype=np.uint8).reshape(7, 5)
    out = block_mean(a, 3, 2, rows_per_chunk=3)
    expect = np.array([[a[r:r + 3, c:c + 2].mean() for c in range(0, 5, 2)] for r in range(0, 7, 3)])
    np.testing.assert_allclose(out, expect, rtol=1e-6)
    rgb = np.stack([a, 2 * a, 3 * a], axis=-1).astype(np.uint16)
    np.testing.assert_allclose(block_mean(rgb, 3, 2)[..., 2], 3 * expect, rtol=1e-6)


def test_resize_constant_and_ramp():
    const = np.full((1000, 700, 3), 77, np.uint8)
    small = resize_bilinear(const, 64, 64)
    assert small.shape == (64, 64, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small, 77.0, atol=1e-3)
    # a linear ramp stays linear through shrink (block mean + bilinear) and enlarge
    xx = np.tile(np.arange(512, dtype=np.float32), (256, 1))
    down = resize_bilinear(xx, 64, 64)
    centres = (np.arange(64) + 0.5) * 8 - 0.5
    np.testing.assert_allclose(down[10], centres, atol=0.6)
    up = resize_bilinear(down, 256, 512)
    np.testing.assert_allclose(up[:, 8:-8], xx[:, 8:-8], atol=0.6)


def test_resize_round_trip_of_smooth_image():
    yy, xx = np.mgrid[:300, :400].astype(np.float32)
    img = np.sin(yy / 40) * np.cos(xx / 50)
    back = resize_bilinear(resize_bilinear(img, 256, 256), 300, 400)
    assert np.abs(back - img).max() < 0.02


def test_resize_writes_into_out():
    out = np.empty((40, 50), np.float32)
    res = resize_bilinear(np.ones((20, 20), np.float32), 40, 50, out=out)
    assert res is out and np.allclose(out, 1.0)


def test_keep_dtype_rounds_clips_and_thresholds():
    grey = np.zeros((40, 40), np.uint8)
    grey[:, 20:] = 255
    out = resize_keep_dtype(grey, 20, 20)
    assert out.dtype == np.uint8 and out.shape == (20, 20)
    assert out[:, :9].max() == 0 and out[:, 11:].min() == 255
    assert set(np.unique(out)) <= set(range(256))
    rgb = np.full((30, 30, 3), 65535, np.uint16)
    assert (resize_keep_dtype(rgb, 16, 16) == 65535).all()
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    small = resize_keep_dtype(mask, 20, 20)
    assert small.dtype == bool and small.sum() == 100
    half = resize_keep_dtype(np.full((40, 40), 0.25, np.float32), 16, 16)
    assert half.dtype == np.float32 and np.allclose(half, 0.25)


def test_keep_dtype_signed_range():
    img = np.full((32, 32), -32768, np.int16)
    assert (resize_keep_dtype(img, 16, 16) == -32768).all()
