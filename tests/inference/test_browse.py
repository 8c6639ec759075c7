"""One slice of a lazy stack on demand equals that slice of a whole-stack run; only that slice is read."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.inference.browse import SliceSegmenter
from napari_litenext.inference.predict import predict
from napari_litenext.io.ngff import temporary_label_store
from napari_litenext.network.registry import load_model

da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")


def test_slice_on_demand_matches_the_whole_run_and_fills_a_zarr_store(random_checkpoint, rng):
    stack = rng.integers(0, 4000, (4, 2, 48, 40)).astype(np.uint16)  # T, C, Y, X
    model = load_model(random_checkpoint, device="cpu")
    whole = predict(stack, model, axes="TCYX", channel=1, instances=True)
    reads = []
    source = da.from_array(stack, chunks=(1, 2, 48, 40))
    lazy = source.map_blocks(lambda b, block_info=None: reads.append(block_info[0]["chunk-location"]) or b,
                             dtype=stack.dtype)
    store = temporary_label_store((4, 48, 40), np.int32, "TYX")
    try:
        segmenter = SliceSegmenter(lazy, model, axes="TCYX", channel=1, instances=True, labels=store.labels)
        segmenter.value_range  # the whole stack's range: sampled once
        reads.clear()
        result = segmenter((2,))
        assert {r[0] for r in reads} == {2}  # only the slice on show was read
        # ids are numbered per slice; the pixels and the objects are those of the whole run
        expected = whole.labels[2]
        assert np.array_equal(result.labels > 0, expected > 0)
        assert len(np.unique(result.labels)) == len(np.unique(expected))
        np.testing.assert_array_equal(store.labels[2], result.labels)
        assert not store.labels[1].any()
        with pytest.raises(IndexError):
            segmenter((4,))
    finally:
        import shutil

        shutil.rmtree(store.path.parent)
