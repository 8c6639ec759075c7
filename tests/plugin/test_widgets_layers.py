"""Layer data -> training samples, output geometry, run folders and the session registry (no Qt needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.plugin.widgets._layers import LayerPair, crop_to_painted, default_output_dir, full_resolution, \
    label_planes, layer_axes, output_geometry, training_samples
from napari_litenext.plugin.widgets._state import SessionModels
from napari_litenext.plugin.widgets._train_job import DataSpec, clock, folder_value, gather_samples
from napari_litenext.training.data import DataError


def _pair(h=40, w=48, rgb=False, z=None, painted=True):
    shape = (h, w, 3) if rgb else (h, w)
    if z is not None:
        shape = (z,) + shape
    image = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    labels = np.zeros(((z,) if z is not None else ()) + (h, w), dtype=np.int32)
    if painted:
        labels[..., 5:10, 6:12] = 3  # an instance id: foreground is label > 0
    return image, labels


def test_2d_pair_gives_one_sample_with_foreground_from_instance_ids():
    image, labels = _pair()
    (sample,) = training_samples([LayerPair(image, labels, name="cells")])
    assert sample.image.shape == (40, 48)
    assert sample.mask.dtype == bool and sample.mask.sum() == 5 * 6
    assert sample.name == "cells"


def test_rgb_pair_keeps_the_colour_axis():
    image, labels = _pair(rgb=True)
    (sample,) = training_samples([LayerPair(image, labels, rgb=True)])
    assert sample.image.shape == (40, 48, 3)


def test_stacks_give_one_sample_per_painted_slice():
    image, labels = _pair(z=4)
    labels[1] = 0  # slice 1 not painted yet: left out
    samples = training_samples([LayerPair(image, labels, name="stack")])
    assert [s.name for s in samples] == ["stack [slice 0]", "stack [slice 2]", "stack [slice 3]"]
    assert all(s.image.shape == (40, 48) for s in samples)
    np.testing.assert_array_equal(samples[1].image, image[2])


def test_several_pairs_are_concatenated():
    a, la = _pair()
    b, lb = _pair(h=32, w=32)
    samples = training_samples([LayerPair(a, la, name="a"), LayerPair(b, lb, name="b")])
    assert [s.name for s in samples] == ["a", "b"]


@pytest.mark.parametrize("make, message", [
    (lambda: (_pair()[0], np.zeros((40, 47), np.int32)), "40 x 48 pixels but labels are 40 x 47"),
    (lambda: (_pair(z=3)[0], _pair()[1]), "stack of 3 slices but the labels are 2D"),
    (lambda: (_pair()[0], _pair(z=2)[1]), "labels are a stack of 2 slices but the image is 2D"),
    (lambda: _pair(painted=False), "labels are empty; paint some objects"),
    (lambda: _pair(z=2, painted=False), "empty in every slice"),
    (lambda: (_pair(z=3)[0], _pair(z=2)[1]), "3 slices but the labels have 2"),
])
def test_bad_pairs_raise_data_error_naming_the_pair(make, message):
    image, labels = make()
    with pytest.raises(DataError, match="^mine: .*" + message.replace("(", r"\(")):
        label_planes(image, labels, False, "mine")


def test_no_pairs_is_an_error():
    with pytest.raises(DataError, match="no training pairs"):
        training_samples([])


def test_crop_to_painted_keeps_the_painted_box_and_a_minimum_edge():
    image = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120)
    mask = np.zeros((100, 120), np.int32)
    mask[50:54, 60:62] = 1
    crop, cmask = crop_to_painted(image, mask, min_edge=32, margin=0)
    assert crop.shape == (32, 32) and cmask.sum() == 8
    # the crop is where the paint is
    ys, xs = np.nonzero(cmask)
    np.testing.assert_array_equal(crop[ys, xs], image[mask > 0])
    # near a border the box shifts inside the image instead of shrinking
    mask[:] = 0
    mask[0:2, 118:120] = 1
    crop, cmask = crop_to_painted(image, mask, min_edge=32, margin=0)
    assert crop.shape == (32, 32) and cmask.sum() == 4


def test_crop_in_training_samples_uses_the_patch_size():
    image = np.zeros((200, 200), np.uint8)
    labels = np.zeros((200, 200), np.int32)
    labels[100:110, 100:110] = 1
    (sample,) = training_samples([LayerPair(image, labels)], crop_min_edge=64)
    assert sample.image.shape == (64, 64) and sample.mask.sum() == 100


def test_output_geometry_maps_axes():
    # 2D grey: the same scale and translate
    assert output_geometry([0.5, 0.25], [10, 20], False, "YX", "YX") == ([0.5, 0.25], [10.0, 20.0])
    # RGB: napari has no scale entry for colour; the output has none either
    assert output_geometry([0.5, 0.25], [1, 2], True, "YXC", "YX") == ([0.5, 0.25], [1.0, 2.0])
    # stack
    assert output_geometry([2.0, 0.5, 0.5], [0, 1, 1], False, "ZYX", "ZYX") == ([2.0, 0.5, 0.5], [0.0, 1.0, 1.0])
    # an RGB stack
    assert output_geometry([3.0, 1, 1], [5, 0, 0], True, "ZYXC", "ZYX") == ([3.0, 1.0, 1.0], [5.0, 0.0, 0.0])
    # channels-first image with one channel chosen: the channel axis is dropped
    assert output_geometry([1.0, 0.2, 0.3], [0, 0, 0], False, "CYX", "YX") == ([0.2, 0.3], [0.0, 0.0])


def test_full_resolution_takes_the_first_level_of_multiscale_data():
    levels = [np.zeros((8, 8)), np.zeros((4, 4))]
    assert full_resolution(levels, multiscale=True) is levels[0]
    assert full_resolution(levels[1]) is levels[1]


def test_default_output_dir_never_reuses_a_folder(tmp_path):
    first = default_output_dir(tmp_path, "my model/1", now=0)
    assert first.parent == tmp_path and first.name.startswith("my-model-1-")
    first.mkdir()
    second = default_output_dir(tmp_path, "my model/1", now=0)
    assert second != first and second.name == first.name + "-2" and not second.exists()


def test_session_models_register_replace_and_signal(tmp_path):
    models = SessionModels()
    seen = []
    models.changed.connect(lambda: seen.append(len(models)))
    a = models.add("a", tmp_path / "a.pt", 0.5)
    models.add("b", tmp_path / "b.pt")
    models.add("a2", tmp_path / "a.pt", 0.75)  # same file: replaces the first entry
    assert [m.name for m in models] == ["b", "a2"]
    assert models.latest().label == "a2 (this session, Dice 0.750)"
    assert a.path.is_absolute()
    assert seen == [1, 2, 2]
    models.clear()
    assert len(models) == 0 and models.latest() is None


def test_gather_samples_auto_validation_holds_out_or_warns():
    pairs = [LayerPair(*_pair(), name=f"p{i}") for i in range(5)]
    train, val, note = gather_samples(DataSpec(pairs=pairs, validation="auto", fraction=0.2))
    assert len(train) == 4 and len(val) == 1 and note == ""
    train, val, note = gather_samples(DataSpec(pairs=pairs[:1], validation="auto"))
    assert len(train) == 1 and val == [] and "validating on it" in note
    with pytest.raises(DataError, match="only one image/mask pair"):
        gather_samples(DataSpec(pairs=pairs[:1], validation="fraction", fraction=0.2))
    train, val, _ = gather_samples(DataSpec(pairs=pairs[:2], validation="layers", val_pair=pairs[4]))
    assert [s.name for s in train] == ["p0", "p1"] and [s.name for s in val] == ["p4"]


def test_gather_samples_crops_layer_pairs_to_the_painted_area():
    image = np.zeros((100, 100), np.uint8)
    labels = np.zeros((100, 100), np.int32)
    labels[40:44, 40:44] = 1
    (sample,), _, _ = gather_samples(DataSpec(pairs=[LayerPair(image, labels)], validation="train", crop=32))
    assert sample.image.shape == (32, 32)


def test_folder_value_and_clock():
    with pytest.raises(DataError, match="choose the images folder"):
        folder_value(".", "images folder")
    assert folder_value("~/x", "images folder").is_absolute()
    assert (clock(None), clock(59.6), clock(61), clock(3725)) == ("-", "1:00", "1:01", "1:02:05")


def test_layer_axes_follow_napari_sliders():
    assert [layer_axes(n, False) for n in (2, 3, 4)] == ["YX", "ZYX", "TZYX"]
    assert [layer_axes(n, True) for n in (3, 4, 5)] == ["YXC", "ZYXC", "TZYXC"]
    for ndim, rgb in ((1, False), (2, True), (5, False)):
        with pytest.raises(ValueError):
            layer_axes(ndim, rgb)
