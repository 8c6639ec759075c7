"""Zarr / OME-Zarr in and out: axes and pixel sizes read, NGFF labels read back by ome-zarr-py."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.errors import ImageReadError
from napari_litenext.io import ngff

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")


def _ome_image(path, data, zarr_format=3):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_image(data, root, axes="zyx", scale={"z": 2.0, "y": 0.5, "x": 0.25}, scale_factors=[2],
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
                fmt=FormatV05() if zarr_format == 3 else FormatV04())
    return path


def _read_labels_back(path):
    """(axes names, level-0 scale, level shapes, is a Label node) as ome-zarr-py reads them."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    # A label with a source image also yields that image's node first.
    node = next((n for n in nodes if any(isinstance(s, Label) for s in n.specs)), nodes[0])
    axes = [a["name"] for a in node.metadata["axes"]]
    scale = next(t["scale"] for t in node.metadata["coordinateTransformations"][0] if t["type"] == "scale")
    return axes, scale, [tuple(d.shape) for d in node.data], any(isinstance(s, Label) for s in node.specs), node


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ome_zarr_image_read_with_axes_scale_and_labels_written_beside_it(tmp_path, monkeypatch, zarr_format):
    data = np.arange(3 * 64 * 80, dtype=np.uint16).reshape(3, 64, 80)
    path = _ome_image(tmp_path / "cells.zarr", data, zarr_format)
    image = ngff.read_zarr(path)
    assert image.ome and image.axes == "ZYX" and image.zarr_format == zarr_format
    assert image.scale == {"Z": 2.0, "Y": 0.5, "X": 0.25} and image.units["X"] == "micrometer"
    np.testing.assert_array_equal(image.array[1, 2:4], data[1, 2:4])

    monkeypatch.setattr(ngff, "PYRAMID_MIN_EDGE", 16)
    labels = (data % 7 == 0).astype(np.int32)
    store = ngff.LabelStore(None, name="litenext", image=path, scale=image.scale, units=image.units)
    store.create(labels.shape, np.int32, "ZYX")
    store.labels[:] = labels
    assert store.finish({"model": "test"}) == path / "labels" / "litenext"

    axes, scale, shapes, is_label, node = _read_labels_back(path / "labels" / "litenext")
    assert axes == ["z", "y", "x"] and scale == [2.0, 0.5, 0.25] and is_label
    assert shapes == [(3, 64, 80), (3, 32, 40), (3, 16, 20)]  # a pyramid: napari opens it fast
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[:, ::2, ::2])
    root = zarr.open_group(str(path / "labels"), mode="r")
    assert "litenext" in dict(root.attrs).get("ome", dict(root.attrs))["labels"]
    with pytest.raises(FileExistsError, match="overwrite"):
        ngff.LabelStore(None, name="litenext", image=path)


def test_standalone_label_store_round_trip_and_discard(tmp_path):
    store = ngff.LabelStore(tmp_path / "out_labels.zarr", name="out", scale={"Y": 0.3, "X": 0.3})
    store.create((40, 50), np.uint8, "YX", probabilities=True)
    store.labels[10:20, 5:9] = 1
    store.finish()
    axes, scale, shapes, is_label, node = _read_labels_back(tmp_path / "out_labels.zarr")
    assert axes == ["y", "x"] and scale == [0.3, 0.3] and is_label and shapes == [(40, 50)]
    assert int(np.asarray(node.data[0]).sum()) == 40
    assert store.probabilities.shape == (40, 50)

    other = ngff.LabelStore(tmp_path / "gone.zarr")
    other.create((32, 32), np.uint8, "YX")
    other.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_labels.zarr"]


def test_plain_array_and_single_array_group(tmp_path):
    zarr.save_array(str(tmp_path / "plain.zarr"), np.ones((20, 30), np.uint8))
    image = ngff.read_zarr(tmp_path / "plain.zarr")
    assert image.axes is None and not image.ome and image.array.shape == (20, 30)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", shape=(4, 20, 30), dtype="uint16")
    assert ngff.read_zarr(tmp_path / "group.zarr").array.shape == (4, 20, 30)
    group.create_array("other", shape=(2, 2), dtype="uint16")
    with pytest.raises(ImageReadError, match="2 arrays"):
        ngff.read_zarr(tmp_path / "group.zarr")
    with pytest.raises(ImageReadError, match="not found"):
        ngff.read_zarr(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ImageReadError, match="not a zarr store"):
        ngff.read_zarr(tmp_path / "empty.zarr")
