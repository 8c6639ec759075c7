import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_litenext.io.images import (ImageReadError, atomic_write, list_images, output_stem, read_image,
                                read_image_with_axes, read_mask, write_png, write_tiff)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_rgb_and_gray_as_stored(tmp_path, rng, suffix):
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"c{suffix}")
    np.testing.assert_array_equal(read_image(tmp_path / f"c{suffix}"), rgb)
    gray = rgb[..., 0].copy()
    Image.fromarray(gray).save(tmp_path / f"g{suffix}")
    np.testing.assert_array_equal(read_image(tmp_path / f"g{suffix}"), gray)


def test_read_jpeg_rgba_palette_and_16bit(tmp_path, rng):
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (16, 16, 4)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").shape == (16, 16, 3)
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (16, 16, 3)
    deep = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    got = read_image(tmp_path / "d.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, deep)


def test_tiff_stack_and_axes(tmp_path, rng):
    stack = rng.integers(0, 4096, (5, 20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    array, axes = read_image_with_axes(tmp_path / "s.tif")
    np.testing.assert_array_equal(array, stack)
    assert axes in (None, "ZYX")  # plain multi-page TIFFs carry no axes
    tifffile.imwrite(tmp_path / "h.tif", stack[:, None], imagej=True, metadata={"axes": "ZCYX"})
    array, axes = read_image_with_axes(tmp_path / "h.tif")
    assert array.shape == (5, 20, 24) and axes == "ZYX"  # the length-1 C axis is dropped
    tifffile.imwrite(tmp_path / "rgb.ome.tif", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8),
                     photometric="rgb")
    array, axes = read_image_with_axes(tmp_path / "rgb.ome.tif")
    assert array.shape == (20, 24, 3) and axes == "YXC"


def test_read_mask_colour_and_stack(tmp_path):
    m = np.zeros((10, 12, 3), np.uint8)
    m[2:5, 3:6, 1] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    got = read_mask(tmp_path / "m.png")
    assert got.shape == (10, 12) and got[3, 4] == 255 and got[0, 0] == 0
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 10, 12), np.uint8), photometric="minisblack")
    with pytest.raises(ImageReadError, match="2D mask"):
        read_mask(tmp_path / "s.tif")


def test_read_errors_are_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("hello")
    good = tmp_path / "t.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:40])
    cases = {"missing.png": "not found", "broken.png": "cannot read", "notes.txt": "unsupported",
             "trunc.png": "cannot read"}
    for name, text in cases.items():
        with pytest.raises(ImageReadError, match=text) as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_write_tiff_metadata_atomic_no_overwrite(tmp_path):
    labels = np.arange(32 * 32, dtype=np.int32).reshape(32, 32) % 5
    path = write_tiff(tmp_path / "out" / "l.tif", labels, metadata={"model": "x", "threshold": 0.5})
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), labels)
        assert json.loads(tif.pages[0].description) == {"model": "x", "threshold": 0.5}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_tiff(path, labels)
    write_tiff(path, labels * 0, overwrite=True)
    assert tifffile.imread(path).max() == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["l.tif"]  # no temporary files left


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "x.tif"

    def fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, fail, overwrite=True)
    assert target.read_bytes() == b"old"  # the previous file survives a failed overwrite


def test_write_png_round_trip(tmp_path, rng):
    rgb = rng.integers(0, 256, (10, 11, 3), dtype=np.uint8)
    write_png(tmp_path / "o.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), rgb)


def test_list_images_files_globs_folders(tmp_path):
    for name in ("b.png", "a.tif", "c.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    names = [p.name for p in list_images([tmp_path])]
    assert names == ["a.tif", "b.png", "c.jpg"]
    assert [p.name for p in list_images([str(tmp_path / "*.png")])] == ["b.png"]
    assert [p.name for p in list_images([str(tmp_path / "**" / "*.png")])] == ["b.png", "d.png"]
    # explicit files keep their order; duplicates appear once
    got = list_images([tmp_path / "c.jpg", tmp_path / "a.tif", str(tmp_path / "*.jpg")])
    assert [p.name for p in got] == ["c.jpg", "a.tif"]


def test_list_images_reports_every_missing_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError) as info:
        list_images([tmp_path / "nope.png", str(tmp_path / "*.tif"), tmp_path / "empty"])
    msg = str(info.value)
    assert "\n" not in msg and "nope.png (not found)" in msg and "matches no image" in msg
    assert "folder with no" in msg


def test_output_stem():
    assert output_stem("/x/cells.ome.tif") == "cells"
    assert output_stem("a.b.png") == "a.b"
    assert output_stem("IMG.OME.TIFF") == "IMG"


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_tiff_compressions_without_imagecodecs(tmp_path, rng, compression):
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.tif", compression=compression)
    got = read_image(tmp_path / "c.tif")
    assert got.shape == (20, 24, 3) and got.dtype == np.uint8
    if compression == "tiff_lzw":
        np.testing.assert_array_equal(got, rgb)


def test_memory_map_maps_uncompressed_tiffs_and_reads_the_rest(tmp_path, rng):
    stack = rng.integers(0, 60000, (3, 40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "zlib.tif", stack, compression="zlib", photometric="minisblack",
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "tiled.tif", stack, tile=(16, 16), photometric="minisblack", metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "big-endian.tif", stack, byteorder=">", photometric="minisblack",
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "single.tif", stack[:1])  # a length-1 axis is dropped, as when reading
    mapped, axes = read_image_with_axes(tmp_path / "plain.tif", memory_map=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert axes == read_image_with_axes(tmp_path / "plain.tif")[1] == "ZYX"
    np.testing.assert_array_equal(mapped, stack)
    for name in ("zlib", "tiled", "big-endian"):
        array, axes = read_image_with_axes(tmp_path / f"{name}.tif", memory_map=True)
        assert not isinstance(array, np.memmap) and array.dtype.isnative, name
        np.testing.assert_array_equal(array, stack)
    single, _ = read_image_with_axes(tmp_path / "single.tif", memory_map=True)
    assert isinstance(single, np.memmap) and single.shape == (40, 50)
    np.testing.assert_array_equal(single, stack[0])
