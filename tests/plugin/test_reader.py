"""OME-TIFF reader: axes, channels, RGB and physical sizes; declines what it should leave to napari."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_litenext.plugin.reader import napari_get_reader, read_ome_tiff


@pytest.fixture
def czyx(tmp_path):
    data = np.arange(2 * 3 * 8 * 10, dtype=np.uint16).reshape(2, 3, 8, 10)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "CZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 1.5,
        "Channel": {"Name": ["DAPI", "GFP"]}})
    return path, data


@pytest.fixture
def napari_plugins():
    """napari's plugin manager with installed plugins discovered (a bare ViewerModel does not)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-litenext" in {m.name for m in pm.iter_manifests()}
    return pm


def test_channels_become_a_channel_axis_with_names_and_physical_scale(czyx):
    path, data = czyx
    reader = napari_get_reader(str(path))
    assert reader is read_ome_tiff
    ((out, kwargs, kind),) = reader(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(out, data)
    assert kwargs["channel_axis"] == 0
    assert kwargs["name"] == ["cells DAPI", "cells GFP"]
    assert kwargs["scale"] == (1.5, 0.25, 0.25)
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["units"] == ("µm", "µm", "µm")


def test_time_increment_sets_the_t_scale_and_missing_sizes_stay_pixels(tmp_path):
    path = tmp_path / "movie.ome.tiff"
    tifffile.imwrite(path, np.zeros((4, 6, 7), np.uint8), ome=True,
                     metadata={"axes": "TYX", "TimeIncrement": 30.0, "TimeIncrementUnit": "s"})
    ((_, kwargs, _),) = read_ome_tiff(path)
    assert "channel_axis" not in kwargs
    assert kwargs["scale"] == (30.0, 1.0, 1.0)
    assert kwargs["units"] == ("s", "pixel", "pixel")
    assert kwargs["axis_labels"] == ("t", "y", "x")
    assert kwargs["name"] == "movie"


def test_interleaved_rgb_stays_rgb(tmp_path):
    path = tmp_path / "he.ome.tif"
    rgb = np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, ome=True, photometric="rgb", metadata={"axes": "YXS"})
    ((out, kwargs, _),) = read_ome_tiff(path)
    np.testing.assert_array_equal(out, rgb)
    assert kwargs["rgb"] is True
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["axis_labels"] == ("y", "x")


def test_declines_files_without_ome_metadata_and_other_suffixes(tmp_path):
    plain = tmp_path / "plain.ome.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.uint8), ome=False)
    other = tmp_path / "plain.tif"
    tifffile.imwrite(other, np.zeros((4, 4), np.uint8), ome=True)
    not_tiff = tmp_path / "broken.ome.tif"
    not_tiff.write_bytes(b"not a tiff")
    for path in (plain, other, not_tiff, tmp_path / "missing.ome.tif", tmp_path):
        assert napari_get_reader(str(path)) is None, path


def test_list_of_paths_reads_every_file(czyx, tmp_path):
    path, _ = czyx
    second = tmp_path / "second.ome.tif"
    tifffile.imwrite(second, np.ones((5, 5), np.uint8), ome=True, metadata={"axes": "YX"})
    reader = napari_get_reader([str(path), str(second)])
    assert reader is not None
    assert [kw["name"] for _, kw, _ in reader([str(path), str(second)])] == [["cells DAPI", "cells GFP"], "second"]
    assert napari_get_reader([str(path), str(tmp_path / "x.png")]) is None


def test_napari_opens_one_layer_per_channel_with_scale_and_axis_labels(czyx, napari_plugins):
    from napari.components import ViewerModel

    path, data = czyx
    viewer = ViewerModel()
    layers = viewer.open(str(path), plugin="napari-litenext")
    assert [layer.name for layer in layers] == ["cells DAPI", "cells GFP"]
    for channel, layer in enumerate(layers):
        np.testing.assert_array_equal(np.asarray(layer.data), data[channel])
        np.testing.assert_allclose(layer.scale, [1.5, 0.25, 0.25])
        assert tuple(layer.axis_labels) == ("z", "y", "x")
        assert all(str(u) == "micrometer" for u in layer.units)


def test_uncompressed_series_are_memory_mapped_and_compressed_ones_read(tmp_path):
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    for name, extra in (("plain", {}), ("zlib", {"compression": "zlib"})):
        path = tmp_path / f"{name}.ome.tif"
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX"}, **extra)
        ((out, kwargs, _),) = read_ome_tiff(str(path))
        assert isinstance(out, np.memmap) == (name == "plain"), name
        np.testing.assert_array_equal(out, data)
        assert kwargs["axis_labels"] == ("z", "y", "x")


def test_single_channel_axis_is_dropped_as_a_view_of_the_map(tmp_path):
    data = np.arange(1 * 2 * 8 * 10, dtype=np.uint8).reshape(1, 2, 8, 10)
    path = tmp_path / "one.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "CZYX", "Channel": {"Name": ["DAPI"]}})
    ((out, kwargs, _),) = read_ome_tiff(str(path))
    assert out.shape == (2, 8, 10) and isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, data[0])
    assert kwargs["name"] == "one DAPI"
