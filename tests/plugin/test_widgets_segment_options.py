"""Segment widget: channel picker, linking ids through Z, exporting the chosen model; Train widget export."""

from __future__ import annotations

import numpy as np
import pytest

from _widgets_support import PLUGIN, errors_since, isolated_widget_state, labels_like, notifications, \
    open_widget, skip_without_display, wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _run(qtbot, widget):
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_error is None, widget.last_error


def test_channel_picker_segments_one_channel_of_a_cyx_layer(viewer, qtbot, random_checkpoint, rng, monkeypatch):
    from napari_litenext.plugin.widgets import segment as segment_module

    seen = []
    original = segment_module._segment_job

    def spy(data, source, device, kwargs, should_stop):
        seen.append(kwargs)
        return (yield from original(data, source, device, kwargs, should_stop))

    monkeypatch.setattr(segment_module, "_segment_job", spy)
    cyx = rng.integers(0, 255, (3, 48, 40)).astype(np.uint8)
    layer = viewer.add_image(cyx, name="cyx")
    widget = open_widget(viewer, "Segment")
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    assert not widget.channel_axis.native.isHidden() and widget.channel_axis.value == -1
    widget.channel_axis.value = 0
    assert not widget.channel.native.isHidden() and widget.channel.max == 2
    widget.channel.value = 2
    _run(qtbot, widget)
    assert seen[-1]["axes"] == "CYX" and seen[-1]["channel"] == 2
    labels = viewer.layers["cyx labels"]
    assert labels.data.shape == (48, 40) and labels.metadata["litenext"]["channel"] == 2
    import napari_litenext as nl

    expected = nl.predict(cyx[2], nl.load_model(random_checkpoint, device="cpu")).labels
    np.testing.assert_array_equal(labels.data, expected)
    # without a channel axis the layer is a stack of three slices
    widget.channel_axis.value = -1
    assert widget.channel.native.isHidden()
    _run(qtbot, widget)
    assert widget.last.labels.data.shape == (3, 48, 40)  # a new layer: the 2D one is kept


def test_link_through_z_gives_one_id_per_object(viewer, qtbot, tmp_path):
    import torch
    from torch import nn

    from napari_litenext.config import InferenceConfig, ModelCard
    from napari_litenext.network.checkpoint import save_checkpoint
    from napari_litenext.network.model import LiteNeXt

    # shifted disks: 2 per slice drifting 2 px per slice; a model that follows the image's brightness
    stack = np.zeros((6, 64, 64), np.uint8)
    for z in range(6):
        stack[z][_disc((64, 64), 20, 14 + 2 * z, 7) | _disc((64, 64), 44, 40 - 2 * z, 7)] = 255
    model = LiteNeXt()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    path = tmp_path / "zero.pt"
    save_checkpoint(path, model, InferenceConfig(mode="tile", tile_size=64, instances=True, threshold=0.5),
                    ModelCard(name="zero"))
    widget = open_widget(viewer, "Segment")
    widget.select_model(path)
    qtbot.waitUntil(lambda: widget.model_values.source == str(path), timeout=30_000)
    layer = viewer.add_image(stack, name="disks")
    widget.image.value = layer
    widget.settings.probabilities.value = True
    _run(qtbot, widget)
    # a zero network gives probability 0.5 everywhere: replace the kept map by the disks and re-apply,
    # which runs the same post-processing and Z linking as a run
    widget.last.probabilities[...] = stack / 255.0 * 0.9 + 0.05
    widget.settings.threshold.value = 0.4
    qtbot.waitUntil(lambda: widget.last.settings.get("threshold") == pytest.approx(0.4) and widget.post_worker is None,
                    timeout=20_000)
    labels = viewer.layers["disks labels"].data
    assert len(np.unique(labels)) - 1 == 12  # each slice numbered on its own
    widget.settings.stitch_threshold.value = 0.3
    qtbot.waitUntil(lambda: widget.last.settings.get("stitch_threshold") == pytest.approx(0.3)
                    and widget.post_worker is None, timeout=20_000)
    labels = viewer.layers["disks labels"].data
    per_slice = [set(np.unique(labels[z])) - {0} for z in range(6)]
    assert len(per_slice[0]) == 2 and all(s == per_slice[0] for s in per_slice)


def test_object_size_and_adapt_to_objects_are_passed_only_when_changed(viewer, qtbot, tmp_path, rng, monkeypatch):
    import torch

    from napari_litenext.config import InferenceConfig, ModelCard
    from napari_litenext.network.checkpoint import save_checkpoint
    from napari_litenext.network.model import LiteNeXt
    from napari_litenext.plugin.widgets import segment as segment_module

    seen = []
    original = segment_module._segment_job

    def spy(data, source, device, kwargs, should_stop):
        seen.append(dict(kwargs))
        return (yield from original(data, source, device, kwargs, should_stop))

    monkeypatch.setattr(segment_module, "_segment_job", spy)
    torch.manual_seed(0)
    path = tmp_path / "sized.pt"
    save_checkpoint(path, LiteNeXt(), InferenceConfig(mode="tile", tile_size=64, trained_object_size=16.0),
                    ModelCard(name="sized"))
    widget = open_widget(viewer, "Segment")
    widget.select_model(path)
    qtbot.waitUntil(lambda: widget.model_values.source == str(path), timeout=30_000)
    s = widget.settings
    assert s.object_size.value == "off" and s.adaptive.value is False  # the model's values
    layer = viewer.add_image(rng.integers(0, 255, (48, 40)).astype(np.uint8), name="img")
    widget.image.value = layer
    _run(qtbot, widget)
    assert "object_size" not in seen[-1] and "adaptive" not in seen[-1]
    s.object_size.value = "32"
    assert not widget._reapply_timer.isActive()  # a new object size needs the network, not a re-apply
    _run(qtbot, widget)
    assert seen[-1]["object_size"] == "32" and "adaptive" not in seen[-1]
    meta = viewer.layers["img labels"].metadata["litenext"]
    assert viewer.layers["img labels"].data.shape == (48, 40) and meta["scale"] == 0.5
    s.adaptive.value = True
    _run(qtbot, widget)
    assert seen[-1]["adaptive"] is True and viewer.layers["img labels"].metadata["litenext"]["adaptive"] is True


def test_segment_widget_exports_the_chosen_model(viewer, qtbot, random_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    widget = open_widget(viewer, "Segment")
    widget.select_model(random_checkpoint)
    widget.export_model(tmp_path / "random.onnx")
    wait_idle(qtbot, widget, "export_worker", timeout=120_000)
    assert widget.last_error is None and (tmp_path / "random.onnx").stat().st_size > 100_000
    assert str(tmp_path / "random.onnx") in widget.status.value
    widget.export_model(tmp_path / "random.tar")
    wait_idle(qtbot, widget, "export_worker")
    assert "name the file .zip" in widget.last_error and not (tmp_path / "random.tar").exists()


def test_train_widget_exports_the_model_it_trained(viewer, qtbot, tmp_path, rng):
    pytest.importorskip("bioimageio.spec")
    import torch

    from napari_litenext import load_model

    image = rng.integers(0, 40, (64, 64)).astype(np.uint8)
    painted = labels_like((64, 64), [(4, 14, 6, 16), (30, 40, 30, 44)])
    image[painted > 0] += 150
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(painted, name="cells painted")
    widget = open_widget(viewer, "Train")
    for name, value in dict(epochs=1, patch_size=32, batch_size=2, srp=False, output_folder=tmp_path / "run").items():
        getattr(widget.recipe, name).value = value
    (image_box, labels_box), = widget.pair_rows()
    image_box.value, labels_box.value = image_layer, labels_layer
    assert not widget.export_button.enabled
    widget.start()
    wait_idle(qtbot, widget, timeout=300_000)
    assert widget.export_button.enabled
    widget.export_model(tmp_path / "mine.zip")
    wait_idle(qtbot, widget, "export_worker", timeout=300_000)
    assert widget.last_error is None, widget.last_error
    trained, exported = load_model(tmp_path / "run" / "best.pt", device="cpu"), load_model(tmp_path / "mine.zip",
                                                                                              device="cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(trained(x), exported(x), atol=1e-6)
    assert exported.inference == trained.inference
