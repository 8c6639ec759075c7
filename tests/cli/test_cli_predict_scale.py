"""``napari-litenext predict`` on zarr inputs and on a local dask cluster (``--workers``)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_litenext.cli import main
from napari_litenext.network.registry import load_model
from napari_litenext.inference.predict import predict

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
pytest.importorskip("distributed")


@pytest.fixture
def ome_image(tmp_path, rng):
    from ome_zarr.writer import write_image

    data = rng.integers(0, 4000, (2, 70, 90)).astype(np.uint16)
    root = zarr.open_group(str(tmp_path / "cells.ome.zarr"), mode="w")
    write_image(data, root, axes="zyx", scale={"z": 3.0, "y": 0.4, "x": 0.4}, scale_factors=[2])
    return tmp_path / "cells.ome.zarr", data


def _labels_node(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    return next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))


def test_ome_zarr_input_gives_ngff_labels(ome_image, tmp_path, random_checkpoint, capsys):
    path, data = ome_image
    assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(random_checkpoint),
                 "--instances", "-q"]) == 0
    node = _labels_node(tmp_path / "out" / "cells_labels.zarr")
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [3.0, 0.4, 0.4]
    expected = predict(data, load_model(random_checkpoint, device="cpu"), instances=True, axes="ZYX").labels
    np.testing.assert_array_equal(np.asarray(node.data[0]), expected)

    assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(random_checkpoint),
                 "--into-image", "-q"]) == 0
    node = _labels_node(path / "labels" / "litenext")
    assert np.asarray(node.data[0]).shape == data.shape
    assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(random_checkpoint),
                 "--into-image", "-q"]) == 1  # exists: kept without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_plain_zarr_into_image_is_refused(tmp_path, random_checkpoint, capsys):
    zarr.save_array(str(tmp_path / "plain.zarr"), np.zeros((32, 32), np.uint8))
    assert main(["predict", str(tmp_path / "plain.zarr"), "-o", str(tmp_path / "o"), "--model",
                 str(random_checkpoint), "--into-image", "-q"]) == 1
    err = capsys.readouterr().err
    assert "needs an OME-Zarr image" in err and "Traceback" not in err
    assert main(["predict", str(tmp_path / "plain.zarr"), "-o", str(tmp_path / "o"), "--workers", "0"]) == 2


@pytest.mark.slow
def test_workers_give_the_single_process_outputs(tmp_path, rng, random_checkpoint, ome_image):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"im{i}.tif", rng.integers(0, 255, (40 + 8 * i, 56)).astype(np.uint8))
    model = ["--model", str(random_checkpoint), "-q", "--batch-size", "1"]
    assert main(["predict", str(folder), "-o", str(tmp_path / "one")] + model) == 0
    assert main(["predict", str(folder), str(ome_image[0]), "-o", str(tmp_path / "two"), "--workers", "2",
                 "--block-size", "64"] + model) == 0
    for i in range(3):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "two" / f"im{i}_labels.tif"),
                                      tifffile.imread(tmp_path / "one" / f"im{i}_labels.tif"))
    blocked = zarr.open_array(str(tmp_path / "two" / "cells_labels.zarr" / "0"), mode="r")[:]
    single = predict(ome_image[1], load_model(random_checkpoint, device="cpu"), axes="ZYX", batch_size=1).labels
    np.testing.assert_array_equal(blocked, single)  # semantic labels: equal, not only up to numbering
