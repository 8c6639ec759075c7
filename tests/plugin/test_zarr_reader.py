"""zarr reader: OME-Zarr images as multiscale layers with scale and axes, their NGFF labels, plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.plugin.zarr_reader import napari_get_zarr_reader, read_zarr_layers

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")


@pytest.fixture
def ome_with_labels(tmp_path):
    from ome_zarr.writer import write_image, write_multiscale_labels

    data = np.arange(2 * 64 * 48, dtype=np.uint16).reshape(2, 64, 48)
    root = zarr.open_group(str(tmp_path / "cells.zarr"), mode="w")
    write_image(data, root, axes="zyx", scale={"z": 2.0, "y": 0.5, "x": 0.5}, scale_factors=[2],
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    labels = (data % 5 == 0).astype(np.int32)
    write_multiscale_labels([labels, labels[:, ::2, ::2]], root, "nuclei", axes="zyx",
                            scale={"z": 2.0, "y": 0.5, "x": 0.5})
    return tmp_path / "cells.zarr", data, labels


def test_ome_zarr_opens_multiscale_with_scale_and_its_labels(ome_with_labels):
    path, data, labels = ome_with_labels
    reader = napari_get_zarr_reader(str(path))
    assert reader is read_zarr_layers
    (image, kwargs, kind), (lab, lab_kwargs, lab_kind) = reader(str(path))
    assert kind == "image" and kwargs["multiscale"] and len(image) == 2
    assert not isinstance(image[0], np.ndarray)  # lazy: napari reads what it shows
    np.testing.assert_array_equal(np.asarray(image[0]), data)
    assert kwargs["scale"] == (2.0, 0.5, 0.5) and kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["units"] == ("micrometer",) * 3
    assert lab_kind == "labels" and lab_kwargs["name"] == "cells nuclei"
    np.testing.assert_array_equal(np.asarray(lab[0]), labels)
    assert lab_kwargs["scale"] == (2.0, 0.5, 0.5)


def test_standalone_labels_store_and_plain_array(tmp_path):
    from napari_litenext.io.ngff import LabelStore

    store = LabelStore(tmp_path / "x_labels.zarr", name="x_labels")
    store.create((20, 30), np.uint8, "YX")
    store.labels[2:5, 2:5] = 1
    store.finish()
    ((data, kwargs, kind),) = read_zarr_layers(str(tmp_path / "x_labels.zarr"))
    assert kind == "labels" and int(np.asarray(data).sum()) == 9
    zarr.save_array(str(tmp_path / "plain.zarr"), np.ones((8, 9), np.uint8))
    ((data, kwargs, kind),) = read_zarr_layers(str(tmp_path / "plain.zarr"))
    assert kind == "image" and kwargs["name"] == "plain" and data.shape == (8, 9)


def test_declines_what_is_not_zarr(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.zarr").write_text("not a folder")
    for path in (tmp_path / "folder", tmp_path / "file.zarr", tmp_path / "missing.zarr"):
        assert napari_get_zarr_reader(str(path)) is None


def test_reader_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import napari_litenext.plugin.zarr_reader, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
