"""A package's pre-processing reproduces napari-litenext's normalisation; test images and cover."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.config import InferenceConfig
from napari_litenext.errors import InputError
from napari_litenext.exchange.testdata import cover_image, make_test_input, normalise, synthetic_image
from napari_litenext.inference.preprocess import to_network_input


@pytest.mark.parametrize("settings, dtype", [
    ({"normalisation": "dtype"}, np.uint8),
    ({"normalisation": "dtype", "invert": True}, np.uint16),
    ({"normalisation": "dtype"}, np.float32),
    ({"normalisation": "percentile"}, np.uint16),
    ({"normalisation": "percentile", "percentiles": (5.0, 95.0), "invert": True}, np.float32),
    ({"normalisation": "minmax"}, np.float32),
])
@pytest.mark.parametrize("rgb", [False, True])
def test_package_normalisation_equals_napari_litenext(settings, dtype, rgb):
    inference = InferenceConfig(mode="tile", **settings)
    rng = np.random.default_rng(1)
    shape = (48, 64, 3) if rgb else (48, 64)
    if np.issubdtype(dtype, np.integer):
        image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    else:
        image = rng.uniform(-0.2, 1.3, shape).astype(dtype) * (1 if settings["normalisation"] == "dtype" else 3000)
    raw = make_test_input(image, inference, 3)
    assert raw.shape == (1, 3, 48, 64) and raw.dtype == (np.float32 if dtype == np.float32 else dtype)
    # Percentiles of a grey image repeated into 3 channels interpolate between slightly different
    # ranks than those of the image itself (3n values instead of n): a difference of the order of
    # 1/n of the range, 1.7e-4 here (3072 pixels), vanishing for real image sizes.
    tolerance = 1e-3 if settings["normalisation"] == "percentile" and not rgb else 1e-6
    assert np.abs(normalise(raw, inference)[0] - to_network_input(image, inference)).max() <= tolerance


def test_constant_image_maps_to_zero_as_in_napari_litenext():
    inference = InferenceConfig(normalisation="percentile", mode="tile")
    image = np.full((32, 32), 7.0, np.float32)
    package = normalise(make_test_input(image, inference, 3), inference)[0]
    assert np.array_equal(package, to_network_input(image, inference))


def test_test_input_sizes_follow_the_mode():
    image = np.zeros((300, 200), np.uint8)
    assert make_test_input(image, InferenceConfig(mode="resize", input_size=64), 3).shape == (1, 3, 64, 64)
    assert make_test_input(image, InferenceConfig(mode="tile"), 3).shape == (1, 3, 256, 192)
    assert make_test_input(np.zeros((40, 70, 4), np.uint8), InferenceConfig(mode="tile"), 3).shape == (1, 3, 32, 64)


@pytest.mark.parametrize("image, match", [
    (np.zeros((8, 64), np.uint8), "at least 16 x 16"),
    (np.zeros((4, 32, 32), np.uint8), "2D grey"),
    (np.zeros((32, 32), np.int32), "dtype int32"),
])
def test_unusable_test_images_are_input_errors(image, match):
    with pytest.raises(InputError, match=match):
        make_test_input(image, InferenceConfig(), 3)


def test_synthetic_image_types_and_contrast():
    assert synthetic_image(InferenceConfig(normalisation="dtype"), 64).dtype == np.uint8
    bright = synthetic_image(InferenceConfig(normalisation="percentile"), 64)
    dark = synthetic_image(InferenceConfig(normalisation="percentile", invert=True), 64)
    assert bright.dtype == np.float32 and np.corrcoef(bright.ravel(), dark.ravel())[0, 1] < -0.99


def test_cover_is_two_to_one_and_marks_the_mask():
    network_input = np.full((3, 32, 32), 0.5, np.float32)
    probabilities = np.zeros((32, 32), np.float32)
    probabilities[8:24, 8:24] = 0.9
    cover = cover_image(network_input, probabilities, 0.5)
    assert cover.dtype == np.uint8 and cover.shape == (256, 512, 3)
    left, right = cover[:, :256], cover[:, 256:]
    assert np.array_equal(left[0, 0], right[0, 0]) and not np.array_equal(left[128, 128], right[128, 128])
