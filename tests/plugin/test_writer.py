"""Labels writer: TIFF + JSON provenance sidecar, atomic, never clobbering a foreign .json."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile

from napari_litenext.plugin import writer as _writer
from napari_litenext.plugin.writer import SIDECAR_FORMAT, write_labels

PROVENANCE = {"model": "nuclei", "sha256": "ab" * 32, "threshold": np.float32(0.4), "instances": True,
              "min_size": np.int64(16), "mode": "tile"}


@pytest.fixture
def labels():
    out = np.zeros((6, 8), np.int32)
    out[1:3, 1:3] = 1
    out[4:6, 5:8] = 7
    return out


def test_writes_tiff_and_sidecar_with_the_segmentation_settings(tmp_path, labels):
    path = tmp_path / "seg.tif"
    written = write_labels(str(path), labels, {"name": "nuclei labels", "scale": (0.5, 0.5),
                                               "translate": (0.0, 2.0), "metadata": {"litenext": PROVENANCE}})
    assert written == [str(path), str(tmp_path / "seg.json")]
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    record = json.loads((tmp_path / "seg.json").read_text())
    assert record["format"] == SIDECAR_FORMAT
    assert record["labels_file"] == "seg.tif"
    assert record["litenext"] == {"model": "nuclei", "sha256": "ab" * 32, "threshold": pytest.approx(0.4),
                                  "instances": True, "min_size": 16, "mode": "tile"}
    assert record["scale"] == [0.5, 0.5] and record["translate"] == [0.0, 2.0]
    assert record["shape"] == [6, 8] and record["n_labels"] == 2
    assert record["labels_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.json", "seg.tif"]  # no temporary files left


def test_layer_without_litenext_settings_is_saved_with_a_note(tmp_path, labels):
    write_labels(str(tmp_path / "hand.tiff"), labels, {"name": "painted"})
    record = json.loads((tmp_path / "hand.json").read_text())
    assert record["litenext"] is None and "no napari-litenext" in record["note"]


@pytest.mark.parametrize(("high", "dtype"), [(200, np.uint8), (60000, np.uint16), (70000, np.uint32)])
def test_ids_are_kept_in_the_smallest_unsigned_type(tmp_path, high, dtype):
    data = np.array([[0, 1], [2, high]], dtype=np.int64)
    write_labels(str(tmp_path / "x.tif"), data, {})
    out = tifffile.imread(tmp_path / "x.tif")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, data)


def test_bool_and_multiscale_labels(tmp_path):
    mask = np.eye(4, dtype=bool)
    write_labels(str(tmp_path / "b.tif"), [mask, mask[::2, ::2]], {})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), mask.astype(np.uint8))


def test_refuses_non_integer_data_and_wrong_suffix(tmp_path, labels):
    with pytest.raises(ValueError, match="integers"):
        write_labels(str(tmp_path / "f.tif"), labels.astype(float), {})
    with pytest.raises(ValueError, match=r"\.tif"):
        write_labels(str(tmp_path / "f.png"), labels, {})
    assert list(tmp_path.iterdir()) == []


def test_foreign_json_blocks_the_save_before_anything_is_written(tmp_path, labels):
    foreign = tmp_path / "seg.json"
    foreign.write_text('{"my": "notes"}')
    with pytest.raises(FileExistsError, match="not written by napari-litenext"):
        write_labels(str(tmp_path / "seg.tif"), labels, {})
    assert foreign.read_text() == '{"my": "notes"}'
    assert not (tmp_path / "seg.tif").exists()


def test_saving_again_replaces_own_files(tmp_path, labels):
    # napari's save dialog has already asked "replace?"; replacing our own pair is the convention.
    path = tmp_path / "seg.tif"
    write_labels(str(path), labels, {"metadata": {"litenext": {"threshold": 0.5}}})
    write_labels(str(path), labels * 2, {"metadata": {"litenext": {"threshold": 0.7}}})
    np.testing.assert_array_equal(tifffile.imread(path), labels * 2)
    assert json.loads((tmp_path / "seg.json").read_text())["litenext"] == {"threshold": 0.7}


def test_failed_write_leaves_the_previous_file_intact(tmp_path, labels, monkeypatch):
    path = tmp_path / "seg.tif"
    write_labels(str(path), labels, {})
    before = path.read_bytes(), (tmp_path / "seg.json").read_bytes()

    def broken(tmp, *args, **kwargs):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_writer, "_write_tiff", broken)
    with pytest.raises(OSError, match="disk full"):
        write_labels(str(path), labels * 3, {})
    assert (path.read_bytes(), (tmp_path / "seg.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.json", "seg.tif"]


def test_napari_layer_save_through_the_plugin(tmp_path, labels):
    from napari.layers import Labels
    from npe2 import PluginManager

    PluginManager.instance().discover()
    layer = Labels(labels, name="nuclei", scale=(2.0, 2.0), metadata={"litenext": PROVENANCE})
    saved = layer.save(str(tmp_path / "out.tif"), plugin="napari-litenext")
    assert saved == [str(tmp_path / "out.tif"), str(tmp_path / "out.json")]
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["layer"] == "nuclei" and record["scale"] == [2.0, 2.0]
    assert record["litenext"]["model"] == "nuclei"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), labels)
