import numpy as np
import pytest

from napari_litenext.inference.tiling import TileGrid, block_mean, ramp_window, resize_bilinear, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (32, 32, 8), (20, 32, 8), (1000, 512, 64),
                                                 (65, 32, 0), (97, 48, 23)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap  # neighbours share at least `overlap`


def test_ramp_window_positive_and_flat_at_borders():
    w = ramp_window(32, 8, 0)
    assert (w > 0).all() and (w <= 1).all()
    assert np.all(w[8:] == 1) and np.all(np.diff(w[:9]) > 0)
    assert np.array_equal(ramp_window(10, 0, 0), np.ones(10))


@pytest.mark.parametrize("shape,tile,overlap", [((100, 77), 32, 8), ((64, 64), 32, 16), ((20, 90), 32, 8),
                                                ((33, 33), 16, 4), ((300, 200), 64, 0)])
def test_blending_weights_sum_to_one(shape, tile, overlap):
    grid = TileGrid(*shape, tile, overlap)
    total = np.zeros(shape, np.float32)
    covered = np.zeros(shape, np.int32)
    for t in grid:
        grid.accumulate(total, t, np.ones(grid.tile_shape, np.float32))
        covered[t.slices] += 1
    assert covered.min() >= 1
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=2e-6)
    if overlap:
        assert covered.max() > 1  # tiles really overlap


def test_blending_reproduces_a_position_function():
    yy, xx = np.mgrid[:90, :130].astype(np.float32)
    field = np.sin(yy / 7) + np.cos(xx / 11)
    grid = TileGrid(90, 130, 32, 8)
    out = np.zeros_like(field)
    for t in grid:
        grid.accumulate(out, t, field[t.slices].copy())
    np.testing.assert_allclose(out, field, atol=1e-5)


def test_tiles_share_one_shape_and_count():
    grid = TileGrid(100, 50, 32, 8)
    tiles = list(grid)
    assert len(tiles) == len(grid) == len(grid.starts_y) * len(grid.starts_x)
    assert {(t.y1 - t.y0, t.x1 - t.x0) for t in tiles} == {(32, 32)}
    small = TileGrid(20, 40, 64, 8)
    assert small.tile_shape == (20, 40) and len(small) == 1


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
