"""One pairing rule for training, evaluation and the widgets' folder modes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.errors import DataError, EvaluationError
from napari_litenext.inference.evaluate import pair_files
from napari_litenext.io.images import write_png, write_tiff
from napari_litenext.io.pairing import image_key, mask_key, match_folders
from napari_litenext.training.data import samples_from_folders


@pytest.mark.parametrize("name, key", [("cell.ome.tif", "cell"), ("cell.OME.TIFF", "cell"), ("a.b.png", "a.b"),
                                       ("x_mask.png", "x_mask")])
def test_image_key(name, key):
    assert image_key(name) == key


@pytest.mark.parametrize("name, key", [("cell_mask.png", "cell"), ("cell_masks.tif", "cell"),
                                       ("cell_labels.ome.tif", "cell"), ("cell_label.png", "cell"),
                                       ("cell_gt.bmp", "cell"), ("cell.png", "cell"), ("_mask.png", "_mask"),
                                       ("cell_mask_labels.png", "cell_mask")])
def test_mask_key_removes_one_ending(name, key):
    assert mask_key(name) == key


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[5:10, 5:10] = 1
    write_tiff(images / "cell.ome.tif", np.full((20, 24), 9, np.uint16))
    write_tiff(masks / "cell_labels.tif", mask)
    write_png(images / "b.png", np.full((20, 24), 9, np.uint8))
    write_png(masks / "b_mask.png", mask * 255)
    write_png(images / ".hidden.png", mask)
    (images / "notes.txt").write_text("not an image")
    return images, masks


def test_training_and_evaluation_pair_alike(folders):
    images, masks = folders
    pairs, problems = match_folders(images, masks)
    assert problems == []
    assert [(p.name, p.image.name, p.mask.name) for p in pairs] == [("b", "b.png", "b_mask.png"),
                                                                    ("cell", "cell.ome.tif", "cell_labels.tif")]
    assert [s.name for s in samples_from_folders(images, masks)] == ["b", "cell"]
    assert [name for name, _, _ in pair_files(images, masks)] == ["b", "cell"]


def test_both_callers_report_the_same_problems(folders):
    images, masks = folders
    write_png(images / "lonely.png", np.zeros((20, 24), np.uint8))
    write_png(masks / "orphan_mask.png", np.zeros((20, 24), np.uint8))
    write_png(masks / "b_labels.png", np.zeros((20, 24), np.uint8))  # a second mask claiming "b"
    _, problems = match_folders(images, masks)
    assert len(problems) == 3
    assert any("several files" in p and "b_labels.png" in p for p in problems)
    for error, call in ((DataError, samples_from_folders), (EvaluationError, pair_files)):
        with pytest.raises(error, match=r"3 problem\(s\).*lonely.png: no mask.*orphan_mask.png: no image"):
            call(images, masks)


def test_ids_pick_pairs_in_order_and_name_missing_ones(folders):
    images, masks = folders
    pairs, problems = match_folders(images, masks, ids=["cell", "b"])
    assert [p.name for p in pairs] == ["cell", "b"] and problems == []
    _, problems = match_folders(images, masks, ids=["cell", "nope"])
    assert problems == [f"nope: listed, but no image of that name in {images}"]


def test_missing_folder(tmp_path):
    assert match_folders(tmp_path / "no", tmp_path) == ([], [f"images folder not found: {tmp_path / 'no'}"])
