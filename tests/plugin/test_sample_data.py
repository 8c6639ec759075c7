"""Bundled DSB 2018 samples: files, layer data, napari's Open Sample menu, and real rendering."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from napari_litenext.plugin.sample_data import SAMPLES, load_sample, sample_image_paths


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_each_sample_is_an_image_with_matching_ground_truth(key):
    sample = SAMPLES[key]
    (image, image_kw, image_kind), (labels, labels_kw, labels_kind) = load_sample(key)
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.dtype == np.uint8 and labels.dtype == np.uint16
    assert labels.shape == image.shape[:2]
    assert image_kw["rgb"] == (image.ndim == 3)
    # instance ids are exactly 1..N with N the documented number of nuclei
    np.testing.assert_array_equal(np.unique(labels), np.arange(sample.n_nuclei + 1))
    assert labels_kw["metadata"]["source"]["licence"] == "CC0"
    assert image_kw["metadata"]["source"]["image_id"] == sample.dsb_id
    assert 0.02 < np.count_nonzero(labels) / labels.size < 0.6  # nuclei, not an empty or full mask


def test_samples_cover_grayscale_and_colour_and_stay_small():
    kinds = {key: load_sample(key)[0][0].ndim for key in SAMPLES}
    assert 2 in kinds.values() and 3 in kinds.values()
    for sample in SAMPLES.values():
        assert sample.image_path.stat().st_size < 300_000
        assert sample.labels_path.stat().st_size < 50_000
    assert sample_image_paths() == [s.image_path for s in SAMPLES.values()]


def test_samples_match_the_shared_dataset(shared_dir):
    import tifffile
    from skimage.io import imread

    dsb = shared_dir / "data" / "dsb2018"
    for key in ("fluorescence", "stained"):  # uncropped samples equal the dataset's files
        sample = SAMPLES[key]
        (image, _, _), (labels, _, _) = load_sample(key)
        original = imread(dsb / "images" / f"{sample.dsb_id}.png")[..., :3]
        np.testing.assert_array_equal(image, original if image.ndim == 3 else original[..., 0])
        truth = tifffile.imread(dsb / "masks_instance" / f"{sample.dsb_id}.tif")
        np.testing.assert_array_equal(labels > 0, truth > 0)
        assert len(np.unique(labels)) == len(np.unique(truth))


def test_unknown_sample_names_the_known_ones():
    with pytest.raises(KeyError, match="fluorescence"):
        load_sample("nope")


def test_napari_open_sample_adds_image_and_labels_layers():
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()
    viewer = ViewerModel()
    for key in SAMPLES:
        viewer.open_sample("napari-litenext", key)
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels"] * len(SAMPLES)
    assert viewer.layers[2].rgb is True  # "stained" is colour


def _why_no_display() -> str:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        return "needs an X display: run scripts/test.sh, which provides Xvfb"
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return "QT_QPA_PLATFORM=offscreen cannot draw layers; run scripts/test.sh (Xvfb)"
    return ""


# Decided at collection: without a display Qt aborts the whole process when the fixture starts it.
@pytest.mark.gui
@pytest.mark.skipif(bool(_why_no_display()), reason=_why_no_display() or "display available")
def test_sample_renders_in_a_real_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    image, labels = viewer.open_sample("napari-litenext", "fluorescence")
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    # The grey fluorescence image alone has no colour; the labels overlay paints the nuclei.
    coloured = np.mean(shot.max(axis=-1) - shot.min(axis=-1) > 40)
    labels.visible = False
    grey = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert grey.std() > 5, "the image layer did not render (blank canvas)"
    assert np.mean(grey.max(axis=-1) - grey.min(axis=-1) > 40) < 0.001
    assert coloured > 0.02, f"labels overlay not visible ({coloured:.4f} of pixels coloured)"
