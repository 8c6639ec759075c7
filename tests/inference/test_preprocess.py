"""From user pixels to the network's 3 x H x W float32 input in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.config import InferenceConfig
from napari_litenext.inference.preprocess import (InputError, apply_range, intensity_range, select_channels,
                                        to_network_input)

DTYPE = InferenceConfig(normalisation="dtype")
MINMAX = InferenceConfig(normalisation="minmax")
PERCENTILE = InferenceConfig(normalisation="percentile", percentiles=(10.0, 90.0))


# --- select_channels ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, channel, out_shape, picks", [
    ((4, 5), None, (4, 5), None),
    ((4, 5), 0, (4, 5), None),
    ((4, 5, 1), None, (4, 5), 0),
    ((4, 5, 3), None, (4, 5, 3), None),
    ((4, 5, 4), None, (4, 5, 3), None),      # RGBA: alpha dropped
    ((4, 5, 3), 1, (4, 5), 1),               # one channel of an RGB image
    ((4, 5, 4), 3, (4, 5), 3),
    ((4, 5, 2), 1, (4, 5), 1),
    ((4, 5, 6), -1, (4, 5), 5),
    ((4, 5, 6), 0, (4, 5), 0),
])
def test_select_channels(shape, channel, out_shape, picks):
    image = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    out = select_channels(image, channel)
    assert out.shape == out_shape
    assert np.shares_memory(out, image), "must be a view, not a copy"
    if picks is not None:
        np.testing.assert_array_equal(out, image[:, :, picks])
    elif len(out_shape) == 3:
        np.testing.assert_array_equal(out, image[:, :, :3])


@pytest.mark.parametrize("shape, channel, match", [
    ((4, 5), 1, "single-channel"),
    ((4, 5, 2), None, "2 channels; choose one"),
    ((4, 5, 6), None, "6 channels; choose one"),
    ((4, 5, 3), 3, "out of range"),
    ((4, 5, 3), -4, "out of range"),
    ((4,), None, "expected a 2D image"),
    ((2, 4, 5, 3), None, "each 2D plane of a stack"),
    ((4, 5, 20), None, "if it is a stack"),
])
def test_select_channels_errors(shape, channel, match):
    with pytest.raises(InputError, match=match) as caught:
        select_channels(np.zeros(shape, np.uint8), channel)
    # train and evaluate call this and have no axes option: no hint may name one
    assert "axes" not in str(caught.value)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


# --- intensity_range ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, expected", [
    (np.uint8, (0.0, 255.0)),
    (np.uint16, (0.0, 65535.0)),
    (np.int16, (-32768.0, 32767.0)),
    (np.float32, (0.0, 1.0)),
    (np.float64, (0.0, 1.0)),
    (bool, (0.0, 1.0)),
])
def test_dtype_range(dtype, expected):
    image = np.array([[0, 1], [1, 0]]).astype(dtype)
    assert intensity_range(image, DTYPE) == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_minmax_range(dtype):
    image = np.array([[3, 7], [5, 12]]).astype(dtype)
    assert intensity_range(image, MINMAX) == (3.0, 12.0)


def test_percentile_range():
    image = np.arange(101, dtype=np.uint16).reshape(1, 101)
    assert intensity_range(image, PERCENTILE) == pytest.approx((10.0, 90.0))
    wide = InferenceConfig(normalisation="percentile", percentiles=(0.0, 100.0))
    assert intensity_range(image * 3, wide) == pytest.approx((0.0, 300.0))


def test_percentile_ignores_a_few_hot_pixels():
    image = np.full((100, 100), 100, np.uint16)
    image[:50] = 200
    image[0, :5] = 65535  # 0.05 % of the pixels
    lo, hi = intensity_range(image, InferenceConfig(normalisation="percentile", percentiles=(1.0, 99.8)))
    assert (lo, hi) == pytest.approx((100.0, 200.0))


@pytest.mark.parametrize("config", [MINMAX, PERCENTILE])
@pytest.mark.parametrize("value", [0, 7, 255])
def test_constant_image_maps_to_zero(config, value):
    image = np.full((4, 4), value, np.uint8)
    lo, hi = intensity_range(image, config)
    assert hi > lo
    np.testing.assert_array_equal(apply_range(image, lo, hi), np.zeros((4, 4), np.float32))


def test_bool_is_zero_one_for_every_normalisation():
    image = np.array([[True, False]])
    for config in (DTYPE, MINMAX, PERCENTILE):
        assert intensity_range(image, config) == (0.0, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("config", [DTYPE, MINMAX, PERCENTILE])
def test_nan_and_inf_are_refused(bad, config):
    image = np.zeros((3, 3), np.float32)
    image[1, 2] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        intensity_range(image, config)


@pytest.mark.parametrize("image, match", [
    (np.zeros((0, 4), np.uint8), "empty"),
    (np.zeros((2, 2), np.complex64), "dtype complex64"),
    (np.array([["a", "b"]]), "convert it"),
    (np.zeros((2, 2), dtype=object), "convert it"),
])
def test_unusable_images(image, match):
    with pytest.raises(InputError, match=match):
        intensity_range(image, DTYPE)


# --- apply_range and to_network_input ----------------------------------------------------------

def test_apply_range_maps_clips_and_inverts():
    image = np.array([[0, 51, 255]], np.uint8)
    out = apply_range(image, 0.0, 255.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)
    np.testing.assert_allclose(apply_range(image, 0.0, 255.0, invert=True), [[1.0, 0.8, 0.0]], atol=1e-7)
    np.testing.assert_allclose(apply_range(np.array([-5.0, 5.0, 15.0]), 0.0, 10.0), [0.0, 0.5, 1.0])
    assert image[0, 1] == 51  # input untouched


def test_grayscale_is_replicated_to_three_channels():
    image = np.array([[0, 255, 51], [102, 204, 0]], np.uint8)
    out = to_network_input(image, DTYPE)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    assert out.flags.c_contiguous and out.flags.writeable
    expected = np.array([[0, 1, 0.2], [0.4, 0.8, 0]], np.float32)
    for c in range(3):
        np.testing.assert_allclose(out[c], expected, atol=1e-7)


def test_rgb_is_channels_first():
    image = np.zeros((2, 3, 4), np.uint8)  # RGBA
    image[..., 0], image[..., 1], image[..., 2], image[..., 3] = 255, 51, 0, 7
    image[1, 2] = (0, 255, 255, 7)
    out = to_network_input(image, DTYPE)
    assert out.shape == (3, 2, 3) and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(out[:, 1, 2], [0.0, 1.0, 1.0], atol=1e-7)


def test_channel_choice_and_invert():
    image = np.zeros((2, 2, 3), np.uint16)
    image[..., 2] = [[0, 65535], [65535, 0]]
    out = to_network_input(image, InferenceConfig(invert=True), channel=2)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[1], [[1.0, 0.0], [0.0, 1.0]])


def test_value_range_for_tiles_overrides_own_statistics():
    tile = np.array([[10, 20], [30, 40]], np.uint16)
    own = to_network_input(tile, MINMAX)
    shared = to_network_input(tile, MINMAX, value_range=(0.0, 100.0))
    np.testing.assert_allclose(own[0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    np.testing.assert_allclose(shared[0], [[0.1, 0.2], [0.3, 0.4]], atol=1e-6)


def test_float_images_are_clipped_under_dtype():
    image = np.array([[-0.5, 0.25], [1.0, 3.0]], np.float32)
    np.testing.assert_allclose(to_network_input(image, DTYPE)[0], [[0.0, 0.25], [1.0, 1.0]])


def test_percentile_normalisation_end_to_end():
    image = np.arange(101, dtype=np.uint16).reshape(1, 101)
    out = to_network_input(image, PERCENTILE)[0, 0]
    assert out[10] == pytest.approx(0.0) and out[90] == pytest.approx(1.0)
    assert out[50] == pytest.approx(0.5) and out[0] == 0.0 and out[100] == 1.0


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64])
def test_dtype_normalisation_of_wide_integers_uses_the_image_range(dtype):
    image = np.array([[10, 20], [30, 110]], dtype=dtype)
    assert intensity_range(image, DTYPE) == (10.0, 110.0)
