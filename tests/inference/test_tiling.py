import numpy as np
import pytest

from napari_litenext.inference.tiling import TileGrid, ramp_window, tile_starts


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
