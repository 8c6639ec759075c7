"""Lazy inputs (dask, zarr) are read a slice or tile at a time, never whole; outputs can stream to zarr."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.errors import InputError
from napari_litenext.inference import lazy, sink
from napari_litenext.inference.predict import predict
from napari_litenext.network.registry import load_model

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")


class CountingSource:
    """A numpy array behind ``__getitem__`` that records every region read and refuses ``np.asarray``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was requested")

    def chunk_counts(self, chunks: tuple[int, ...]) -> dict[tuple, int]:
        """How many reads touched each chunk (chunk grid ``chunks``)."""
        counts: dict[tuple, int] = {}
        for key in self.reads:
            key = key + (slice(None),) * (self.ndim - len(key))
            ranges = []
            for k, n, c in zip(key, self.shape, chunks):
                start, stop, _ = k.indices(n) if isinstance(k, slice) else (k, k + 1, 1)
                ranges.append(range(start // c, (stop - 1) // c + 1))
            for index in np.ndindex(*[len(r) for r in ranges]):
                chunk = tuple(r[i] for r, i in zip(ranges, index))
                counts[chunk] = counts.get(chunk, 0) + 1
        return counts


def _stack(rng, slices=3, height=80, width=96) -> np.ndarray:
    stack = rng.integers(100, 400, (slices, height, width)).astype(np.uint16)
    yy, xx = np.mgrid[:height, :width]
    for z in range(slices):
        stack[z][(yy - 30 - 5 * z) ** 2 + (xx - 40) ** 2 < 150] += 3000
    return stack


@pytest.fixture
def model(random_checkpoint):
    return load_model(random_checkpoint, device="cpu")


def test_dask_input_is_read_chunk_by_chunk_and_matches_numpy(model, rng):
    image = _stack(rng)
    source = CountingSource(image)
    lazy_image = da.from_array(source, chunks=(1, 32, 32))
    expected = predict(image, model, instances=True, batch_size=2)
    got = predict(lazy_image, model, instances=True, batch_size=2)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-6)
    counts = source.chunk_counts((1, 32, 32))
    assert len(counts) == 3 * 3 * 3  # every chunk was read ...
    assert max(counts.values()) <= 2  # ... once for the intensity sample, once for the tiles
    assert all(key != (slice(0, 3), slice(0, 80), slice(0, 96)) for key in source.reads)


def test_slices_too_large_to_hold_are_segmented_in_blocks(model, rng, monkeypatch, tmp_path):
    image = _stack(rng, slices=2, height=150, width=140)
    source = CountingSource(image)
    monkeypatch.setattr(lazy, "SLICE_PIXELS", 60 * 60)  # "large": no slice is read whole
    got = predict(source, model, axes="ZYX", batch_size=1, instances=True, out=tmp_path / "o.zarr")
    expected = predict(image, model, batch_size=1, instances=True).labels
    assert got.settings["blocks"]["blocks"] == 2 * 3 * 3  # 64 px blocks
    labels = got.labels[:]
    assert np.array_equal(labels > 0, expected > 0) and len(np.unique(labels)) == len(np.unique(expected))
    assert all((k[1].stop - k[1].start) * (k[2].stop - k[2].start) < 140 * 150 for k in source.reads[-18:])
    # a block reads the tiles that cover it (64 px tiles, 8 px overlap): a 32 px chunk is read by at most
    # 3 x 3 blocks, and once more for the intensity sample
    assert max(source.chunk_counts((1, 32, 32)).values()) <= 9 + 1


def test_zarr_input_streams_into_a_zarr_store(model, rng, tmp_path, monkeypatch):
    image = _stack(rng, slices=5)
    stored = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(1, 40, 48),
                             dtype=image.dtype)
    stored[:] = image
    monkeypatch.setattr(sink, "GROUP_PIXELS", 2 * 80 * 96)  # groups of 2 slices: ids must stay unique
    expected = predict(image, model, instances=True)
    got = predict(stored, model, instances=True, out=tmp_path / "out.zarr", keep_probabilities=False)
    assert got.probabilities is None
    assert got.settings["store"] == str(tmp_path / "out.zarr")
    np.testing.assert_array_equal(got.labels[:], expected.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_minmax_range_is_exact_from_one_pass(model, rng):
    image = _stack(rng, slices=4)
    image[2, 5, 7] = 9000
    source = CountingSource(image)
    view = lazy.Arranged(source, [0, 1, 2], None)
    lo, hi = lazy.lazy_intensity_range(view, model.inference.with_overrides(normalisation="minmax"))
    assert (lo, hi) == (float(image.min()), 9000.0)
    assert len(source.reads) == 4  # each slice once
    source.reads.clear()
    assert lazy.lazy_intensity_range(view, model.inference.with_overrides(normalisation="dtype")) == (0.0, 65535.0)
    assert source.reads == []  # the type's range: nothing read


def test_lazy_float_input_with_nan_is_refused(model):
    image = np.zeros((2, 32, 32), np.float32)
    image[1, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict(da.from_array(image, chunks=(1, 16, 16)), model)


def test_lazy_channel_selection_matches_numpy(model, rng):
    image = rng.integers(0, 255, (40, 48, 4)).astype(np.uint8)
    for channel in (None, 1, -1):
        expected = predict(image, model, channel=channel, axes="YXC").probabilities
        got = predict(zarr.array(image, chunks=(16, 16, 4)), model, channel=channel, axes="YXC").probabilities
        np.testing.assert_allclose(got, expected, atol=1e-6)



def test_percentile_range_is_the_in_memory_one_and_bounded_for_huge_stacks(model, rng, monkeypatch):
    from napari_litenext.inference.preprocess import intensity_range

    stack = rng.gamma(2.0, 300.0, (5, 1024, 1024)).astype(np.uint16)  # 5.2 M pixels: sampled
    percentile = model.inference.with_overrides(normalisation="percentile")
    source = CountingSource(stack)
    view = lazy.Arranged(source, [0, 1, 2], None)
    assert lazy.lazy_intensity_range(view, percentile) == intensity_range(stack, percentile)
    assert len(source.reads) == 5  # one slice at a time
    monkeypatch.setattr(lazy, "EXACT_SAMPLE_PIXELS", 1024 * 1024)  # "huge": evenly spaced slices only
    monkeypatch.setattr(lazy, "_SAMPLE_READ_PIXELS", 2 * 1024 * 1024)
    source.reads.clear()
    lo, hi = lazy.lazy_intensity_range(view, percentile)
    assert [k[0] for k in source.reads] == [0, 4]
    assert abs(hi - intensity_range(stack, percentile)[1]) < 0.05 * hi
