"""Object size (segmenting at the scale the model was trained at) and passing ``adaptive`` through."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.errors import Cancelled, SettingsError
from napari_litenext.inference import object_size as object_size_module
from napari_litenext.inference import predict as predict_module
from napari_litenext.inference.object_size import estimate_object_size
from napari_litenext.inference.predict import predict, segment
from napari_litenext.progress import run_to_end
from test_predict import PixelModel


def disks(shape, centres, radius):
    """uint8 image, 255 inside disks of ``radius`` at ``centres``, 0 elsewhere."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, np.uint8)
    for cy, cx in centres:
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = 255
    return out


# four disks 20 px across (radius 10) in an 80 x 96 image
IMAGE = disks((80, 96), [(20, 20), (20, 60), (55, 30), (60, 75)], 10)


def model(trained=20.0, **inference):
    """PixelModel (foreground where the image is bright) in tile mode with one tile per image."""
    return PixelModel(mode="tile", tile_size=512, trained_object_size=trained, **inference)


# ---------------------------------------------------------------- estimate_object_size

@pytest.mark.parametrize("radius", [5, 10, 16])
def test_estimate_gives_the_diameter_of_disks(radius):
    image = disks((128, 128), [(32, 32), (32, 96), (96, 64)], radius)
    assert estimate_object_size(image > 0) == pytest.approx(2 * radius, abs=1.0)


def test_estimate_reads_instances_semantic_masks_and_stacks():
    touching = np.zeros((40, 60), np.int32)
    touching[10:30, 10:30] = 1  # two 20 x 20 squares side by side: two objects of area 400
    touching[10:30, 30:50] = 2
    side = np.sqrt(4 * 400 / np.pi)
    assert estimate_object_size(touching) == pytest.approx(side)
    # as a 0/1 mask they are one connected 20 x 40 object
    assert estimate_object_size(touching > 0) == pytest.approx(np.sqrt(4 * 800 / np.pi))
    # a stack: every plane is measured on its own (an id in two planes counts twice)
    stack = np.stack([touching, np.where(touching == 1, 7, 0)])
    assert estimate_object_size(stack) == pytest.approx(side)
    assert estimate_object_size(touching.astype(np.float32)) == pytest.approx(side)


def test_estimate_without_objects_and_bad_labels():
    assert estimate_object_size(np.zeros((16, 16), np.uint8)) is None
    with pytest.raises(ValueError, match="2D"):
        estimate_object_size(np.ones(5))
    with pytest.raises(ValueError, match="whole numbers"):
        estimate_object_size(np.full((4, 4), -1))
    with pytest.raises(ValueError, match="whole numbers"):
        estimate_object_size(np.full((4, 4), 0.5))


# ---------------------------------------------------------------- segment at an object size

def test_a_given_size_resizes_the_image_by_trained_over_given():
    net = model(trained=20.0, instances=True)
    result = predict(IMAGE, net, object_size=40)  # objects twice the trained size: halve the image
    assert net.calls == [(1, 3, 40, 48)]
    assert result.labels.shape == result.probabilities.shape == IMAGE.shape
    assert result.labels.max() == 4 and result.labels.dtype == np.int32
    assert result.settings["object_size"] == 40.0 and result.settings["scale"] == 0.5
    assert result.settings["axes"] == "YX" and result.settings["input_axes"] == "YX"
    net.calls.clear()
    predict(IMAGE, net, object_size="10")  # text, as the command line and the widget give it
    assert net.calls == [(1, 3, 160, 192)]


def test_the_scale_is_clamped_and_channels_and_stacks_are_kept():
    net = model(trained=20.0)
    rgb = np.stack([IMAGE] * 3, axis=-1)
    result = predict(rgb, net, object_size=1000)  # 0.02 clamped to 0.25
    assert net.calls[-1] == (1, 3, 20, 24) and result.settings["scale"] == 0.25
    assert result.labels.shape == IMAGE.shape and result.settings["input_axes"] == "YXC"
    stack = np.stack([IMAGE, IMAGE[::-1]])
    result = predict(stack, net, object_size=10)
    assert net.calls[-1] == (2, 3, 160, 192) and result.labels.shape == stack.shape
    np.testing.assert_array_equal(result.labels[1], result.labels[0][::-1])


def test_labels_are_made_at_the_input_size_with_the_callers_settings(monkeypatch):
    seen = []
    original = object_size_module.postprocess_stack

    def spy(probabilities, out, threshold, instances, min_size, *args, **kwargs):
        seen.append((probabilities.shape, threshold, instances, min_size, kwargs.get("adaptive")))
        return original(probabilities, out, threshold, instances, min_size, *args, **kwargs)

    monkeypatch.setattr(object_size_module, "postprocess_stack", spy)
    inner = []
    monkeypatch.setattr(predict_module, "postprocess_stack",
                        lambda p, out, t, i, m, *a, **k: inner.append((p.shape, i, m)) or iter(()))
    net = model(trained=20.0)
    result = predict(IMAGE, net, object_size=10, min_size=30, instances=True, threshold=0.4, adaptive=True)
    # the rescaled pass (2x) keeps no labels: a mask, min_size in its pixels (30 * 2**2)
    assert inner == [((1, 160, 192), False, 120)]
    assert seen == [((80, 96), 0.4, True, 30, True)]
    assert result.settings["min_size"] == 30 and result.settings["adaptive"] is True
    assert result.settings["instances"] is True


def test_auto_with_objects_at_the_trained_size_makes_one_pass():
    net = model(trained=21.0, instances=True)  # the disks measure about 20 px: within 25%
    native = predict(IMAGE, net)
    net.calls.clear()
    result = predict(IMAGE, net, object_size="auto")
    assert net.calls == [(1, 3, 80, 96)]
    np.testing.assert_array_equal(result.labels, native.labels)
    assert result.settings["scale"] == 1.0 and result.settings["object_size"] == pytest.approx(20, abs=1)
    assert result.settings["object_size_estimated"] is True


def test_auto_measures_instances_but_gives_the_mask_asked_for():
    net = model(trained=21.0)  # instances off
    result = predict(IMAGE, net, object_size="auto")
    assert len(net.calls) == 1 and result.labels.dtype == np.uint8
    np.testing.assert_array_equal(result.labels, predict(IMAGE, net).labels)
    assert result.settings["instances"] is False


def test_auto_with_objects_twice_the_trained_size_segments_again_rescaled():
    net = model(trained=10.0, instances=True)
    events = []
    result = run_to_end(segment(IMAGE, net, object_size="auto"), events.append)
    assert net.calls == [(1, 3, 80, 96), (1, 3, 40, 48)]
    assert result.settings["scale"] == pytest.approx(0.5, abs=0.03) and result.labels.shape == IMAGE.shape
    assert result.labels.max() == 4
    stages = [e.stage for e in events]
    assert stages.count("tiles") == 2 and "rescale" in stages and stages[-1] == "postprocess"


def test_auto_without_objects_keeps_the_native_result():
    net = model(trained=10.0)
    result = predict(np.zeros((40, 40), np.uint8), net, object_size="auto")
    assert len(net.calls) == 1 and result.settings["object_size"] is None and result.settings["scale"] == 1.0


def test_cancel_stops_a_rescaled_run():
    net = model(trained=10.0)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        predict(IMAGE, net, object_size="auto", should_stop=lambda: next(calls) >= 1)
    assert len(net.calls) == 1


def test_a_lazy_input_that_fits_in_memory_is_rescaled():
    dask = pytest.importorskip("dask.array")
    net = model(trained=20.0)
    result = predict(dask.from_array(IMAGE, chunks=40), net, object_size=40)
    assert net.calls == [(1, 3, 40, 48)] and isinstance(result.labels, np.ndarray)


# ---------------------------------------------------------------- refusals and where it is not applied

def test_a_model_without_its_trained_size_refuses_an_object_size():
    with pytest.raises(SettingsError, match="model 'pixel' does not record the object size.*object size 0"):
        predict(IMAGE, model(trained=0.0), object_size="auto")
    assert predict(IMAGE, model(trained=0.0), object_size=0).labels.shape == IMAGE.shape


@pytest.mark.parametrize("kwargs, where", [
    ({"mode": "resize"}, "in resize mode"),
    ({"workdir": True}, "to disk-backed outputs"),
])
def test_where_it_cannot_apply_a_number_is_refused_and_auto_recorded(tmp_path, kwargs, where):
    kwargs = {k: (tmp_path if v is True else v) for k, v in kwargs.items()}
    net = model(trained=20.0, input_size=64)
    with pytest.raises(SettingsError, match=f"object_size 40 cannot be applied {where}.*object size 0"):
        predict(IMAGE, net, object_size=40, **kwargs)
    result = predict(IMAGE, net, object_size="auto", **kwargs)
    assert result.settings["object_size"].startswith(f"not applied {where}")
    assert len(net.calls) == 1 and "scale" not in result.settings


def test_the_models_own_number_is_recorded_not_refused(tmp_path):
    net = model(trained=20.0, object_size=40.0)
    assert predict(IMAGE, net).settings["scale"] == 0.5
    result = predict(IMAGE, net, workdir=tmp_path)
    assert result.settings["object_size"] == "not applied to disk-backed outputs"


def test_outputs_in_a_store_are_not_rescaled(tmp_path):
    pytest.importorskip("zarr")
    net = model(trained=20.0)
    with pytest.raises(SettingsError, match="zarr store"):
        predict(IMAGE, net, object_size=40, out=tmp_path / "a.zarr")
    result = predict(IMAGE, net, object_size="auto", out=tmp_path / "b.zarr")
    assert result.settings["object_size"] == "not applied to outputs written to a zarr store"


# ---------------------------------------------------------------- adaptive passes through

def test_adaptive_reaches_post_processing_and_the_settings(monkeypatch):
    seen = []
    original = predict_module.postprocess_stack

    def spy(*args, **kwargs):
        seen.append(kwargs.get("adaptive"))
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "postprocess_stack", spy)
    net = model(adaptive=True)
    assert predict(IMAGE, net).settings["adaptive"] is True
    assert predict(IMAGE, net, adaptive=False).settings["adaptive"] is False
    assert seen == [True, False]


def test_relabel_passes_adaptive(monkeypatch):
    from napari_litenext.config import InferenceConfig
    from napari_litenext.inference import postprocess as post

    seen = []
    monkeypatch.setattr(post, "postprocess", lambda *a, **k: seen.append(k.get("adaptive")) or np.zeros((2, 2)))
    post.relabel(np.zeros((2, 2), np.float32), "", InferenceConfig(adaptive=True))
    assert seen == [True]


def test_block_mode_records_that_it_applies_neither(tmp_path):
    pytest.importorskip("zarr")
    from napari_litenext.inference.scale import predict_blocks

    net = model(trained=20.0, adaptive=True)
    image = np.zeros((64, 64), np.uint8)
    result = predict_blocks(image, net, out=tmp_path / "a.zarr", block_size=64, object_size="auto",
                            probabilities=lambda block, flat: np.zeros((block.y1 - block.y0, block.x1 - block.x0),
                                                                       np.float32))
    assert result.settings["adaptive"] == "not applied in block mode"
    assert result.settings["object_size"] == "not applied in block mode"
    with pytest.raises(SettingsError, match="object_size 30 cannot be applied in block mode"):
        predict_blocks(image, net, out=tmp_path / "b.zarr", block_size=64, object_size=30)


def test_specks_do_not_drag_the_estimate_down():
    labels = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    for k, (cy, cx) in enumerate(((50, 50), (50, 150), (150, 50), (150, 150)), start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 30 ** 2] = k  # 60 px nuclei
    for k in range(20):  # twenty 2 x 2 specks: a plain median would say about 2 px
        labels[5 + 9 * k: 7 + 9 * k, 100:102] = 10 + k
    assert estimate_object_size(labels) == pytest.approx(60, abs=1)
