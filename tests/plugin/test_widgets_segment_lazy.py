"""Segment widget on dask/zarr layers: bounded memory, zarr-backed Labels, and "segment as I browse"."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from _widgets_support import isolated_widget_state, skip_without_display, wait_idle  # noqa: F401

skip_without_display()
zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from test_lazy import CountingSource  # noqa: E402

from napari_litenext.inference.predict import predict  # noqa: E402
from napari_litenext.network.registry import load_model  # noqa: E402
from napari_litenext.plugin.widgets.segment import SegmentWidget  # noqa: E402


def _stack(rng, slices=4, size=80):
    stack = rng.integers(100, 400, (slices, size, size)).astype(np.uint16)
    yy, xx = np.mgrid[:size, :size]
    for z in range(slices):
        stack[z][(yy - 30 - 4 * z) ** 2 + (xx - 40) ** 2 < 150] += 3000
    return stack


def _whole_stack_read(source: CountingSource) -> bool:
    """Some read covered every slice of the stack."""
    def covers(k, n):
        return isinstance(k, slice) and k.indices(n)[:2] == (0, n)

    return any(len(key) == source.ndim and all(covers(k, n) for k, n in zip(key, source.shape))
               for key in source.reads)


def test_zarr_backed_stack_gives_zarr_backed_labels_without_reading_it_whole(viewer, qtbot, random_checkpoint,
                                                                              rng, tmp_path):
    stack = _stack(rng)
    source = CountingSource(stack)
    layer = viewer.add_image(da.from_array(source, chunks=(1, 40, 40)), name="lazy")
    widget = SegmentWidget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    widget.run()
    wait_idle(qtbot, widget)
    labels = viewer.layers["lazy labels"]
    assert isinstance(labels.data, zarr.Array)  # on disk, not in memory
    assert widget.last.probabilities is None
    expected = predict(stack, load_model(random_checkpoint, device="cpu"), axes="ZYX")
    np.testing.assert_array_equal(labels.data[:], expected.labels)
    assert not _whole_stack_read(source)


def test_user_picked_store_receives_the_labels(viewer, qtbot, random_checkpoint, rng, tmp_path):
    stack = _stack(rng, slices=2)
    array = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=stack.shape, chunks=(1, 40, 40),
                            dtype=stack.dtype)
    array[:] = stack
    layer = viewer.add_image(array, name="stored")
    widget = SegmentWidget(viewer)
    widget.select_model(random_checkpoint)
    widget.settings.labels_store.value = tmp_path / "picked.zarr"
    widget.image.value = layer
    widget.run()
    wait_idle(qtbot, widget)
    assert (tmp_path / "picked.zarr" / "0").is_dir()
    assert str(tmp_path / "picked.zarr") in str(viewer.layers["stored labels"].data.store)


def test_segment_as_i_browse_computes_the_shown_slice(viewer, qtbot, random_checkpoint, rng):
    stack = _stack(rng, slices=5)
    source = CountingSource(stack)
    layer = viewer.add_image(da.from_array(source, chunks=(1, 80, 80)), name="browse")
    widget = SegmentWidget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    viewer.dims.current_step = (3, 0, 0)
    widget.settings.browse.value = True
    qtbot.waitUntil(lambda: "browse labels" in viewer.layers and widget.browser.worker is None
                    and 3 in widget.browser.done, timeout=60_000)
    labels = viewer.layers["browse labels"]
    assert isinstance(labels.data, zarr.Array) and labels.data.shape == stack.shape
    expected = predict(stack, load_model(random_checkpoint, device="cpu"), axes="ZYX").labels
    assert np.array_equal(labels.data[3] > 0, expected[3] > 0)
    assert not labels.data[1].any()  # not shown yet: not computed
    viewer.dims.current_step = (1, 0, 0)
    qtbot.waitUntil(lambda: 1 in widget.browser.done and widget.browser.worker is None, timeout=60_000)
    assert np.array_equal(labels.data[1] > 0, expected[1] > 0)
    assert not _whole_stack_read(source)
