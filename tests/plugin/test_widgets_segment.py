"""The Segment widget in a real napari viewer (pytest-qt under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from _widgets_support import PLUGIN, errors_since, isolated_widget_state, notifications, open_widget, \
    skip_without_display, wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui


def _segment_widget(viewer):
    return open_widget(viewer, "Segment")


def _run(qtbot, widget):
    widget.run()
    wait_idle(qtbot, widget)


def test_widgets_are_in_the_plugins_menu_and_segment_also_under_layers_segment(viewer):
    from napari._app_model import get_app_model

    app = get_app_model()
    ids = {"napari-litenext.segment_widget", "napari-litenext.train_widget", "napari-litenext.evaluate_widget"}
    registered = {cmd for cmd in ids if cmd in app.commands}
    assert registered == ids

    def items(menu_id):
        found = set()
        for item in app.menus.get_menu(menu_id):
            command = getattr(item, "command", None)
            if command is not None:
                found.add(command.id)
            submenu = getattr(item, "submenu", None)
            if submenu is not None:
                found |= items(submenu)
        return found

    assert "napari-litenext.segment_widget" in items("napari/layers/segment")
    assert ids <= items("napari/plugins")


def test_segment_widget_opens_from_its_menu_command(viewer):
    from napari._app_model import get_app_model

    get_app_model().commands.execute_command("napari-litenext.segment_widget").result()
    docks = viewer.window._wrapped_dock_widgets
    (name,) = [n for n in docks if n.startswith("Segment")]
    assert type(docks[name].inner_widget()).__name__ == "SegmentWidget"


def test_segments_the_sample_keeping_scale_translate_and_name(viewer, qtbot, random_checkpoint):
    image_layer, gt = viewer.open_sample(PLUGIN, "fluorescence")
    image_layer.scale = (0.5, 0.25)
    image_layer.translate = (10.0, -4.0)
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = image_layer
    widget.settings.probabilities.value = True
    widget.settings.instances.value = True
    before = len(notifications())
    _run(qtbot, widget)
    assert errors_since(before) == []
    assert widget.status.value.endswith("(cpu)") and " objects in " in widget.status.value
    labels = viewer.layers[f"{image_layer.name} labels"]
    prob = viewer.layers[f"{image_layer.name} probability"]
    assert type(labels).__name__ == "Labels" and type(prob).__name__ == "Image"
    assert labels.data.shape == image_layer.data.shape == (256, 256)
    assert labels.data.dtype == np.int32
    assert prob.data.dtype == np.float32 and 0.0 <= prob.data.min() and prob.data.max() <= 1.0
    for layer in (labels, prob):
        np.testing.assert_allclose(layer.scale, (0.5, 0.25))
        np.testing.assert_allclose(layer.translate, (10.0, -4.0))
    meta = labels.metadata["litenext"]
    assert meta["source_layer"] == image_layer.name and meta["model"] == "random" and len(meta["sha256"]) == 64
    assert meta["instances"] is True and meta["threshold"] == pytest.approx(0.5)
    # the same as the scripting API gives, also after the widget imported the modules behind it
    from napari_litenext import load_model, predict

    expected = predict(image_layer.data, load_model(random_checkpoint, device="cpu"), instances=True)
    np.testing.assert_array_equal(labels.data, expected.labels)


def test_rgb_image_gives_2d_labels_and_a_rerun_replaces_them(viewer, qtbot, random_checkpoint):
    image_layer, _ = viewer.open_sample(PLUGIN, "stained")
    assert image_layer.rgb
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = image_layer
    widget.settings.instances.value = False
    _run(qtbot, widget)
    labels = viewer.layers[f"{image_layer.name} labels"]
    assert labels.data.shape == image_layer.data.shape[:2] and labels.data.dtype == np.uint8
    assert len(labels.scale) == 2
    n_layers = len(viewer.layers)
    widget.settings.threshold.value = 0.9
    _run(qtbot, widget)
    assert len(viewer.layers) == n_layers  # replaced in place, not added
    assert viewer.layers[f"{image_layer.name} labels"] is labels
    assert labels.metadata["litenext"]["threshold"] == pytest.approx(0.9)


def test_dask_stack_gives_one_labels_stack(viewer, qtbot, random_checkpoint, rng):
    da = pytest.importorskip("dask.array")
    stack = da.from_array(rng.integers(0, 255, (3, 48, 64), dtype=np.uint8), chunks=(1, 48, 64))
    layer = viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5))
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    _run(qtbot, widget)
    labels = viewer.layers["stack labels"]
    assert labels.data.shape == (3, 48, 64)
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))


def test_time_series_of_stacks_gives_labels_of_the_same_shape(viewer, qtbot, random_checkpoint, rng):
    layer = viewer.add_image(rng.integers(0, 255, (2, 3, 32, 40), dtype=np.uint8), name="tzyx",
                             scale=(1.0, 2.0, 0.5, 0.5), translate=(0, 0, 5, 5))
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    _run(qtbot, widget)
    labels = viewer.layers["tzyx labels"]
    assert labels.data.shape == (2, 3, 32, 40) and labels.metadata["litenext"]["axes"] == "TZYX"
    np.testing.assert_allclose(labels.scale, (1.0, 2.0, 0.5, 0.5))
    np.testing.assert_allclose(labels.translate, (0, 0, 5, 5))


def test_threshold_and_min_size_reapply_postprocessing_without_the_network(viewer, qtbot, random_checkpoint,
                                                                          monkeypatch):
    from napari_litenext.plugin.widgets import segment as segment_module
    from napari_litenext.inference.postprocess import postprocess

    runs = []
    original = segment_module._segment_job

    def counting(*args, **kwargs):
        runs.append(1)
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(segment_module, "_segment_job", counting)
    image_layer, _ = viewer.open_sample(PLUGIN, "fluorescence")
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = image_layer
    widget.settings.instances.value = False
    widget.settings.threshold.value = 0.5
    _run(qtbot, widget)
    labels = viewer.layers[f"{image_layer.name} labels"]
    prob = widget.last.probabilities
    widget.settings.threshold.value = 0.3
    widget.settings.min_size.value = 20
    qtbot.waitUntil(lambda: widget.last.settings["min_size"] == 20 and widget.post_worker is None, timeout=20_000)
    assert len(runs) == 1
    np.testing.assert_array_equal(labels.data, postprocess(prob, 0.3, False, 20))
    assert labels.metadata["litenext"]["threshold"] == pytest.approx(0.3)


def test_cancel_adds_nothing(viewer, qtbot, random_checkpoint, rng):
    layer = viewer.add_image(rng.integers(0, 255, (1024, 1024), dtype=np.uint8), name="big")
    widget = _segment_widget(viewer)
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    widget.run()
    assert widget.running
    widget.cancel()
    wait_idle(qtbot, widget)
    assert [l.name for l in viewer.layers] == ["big"]
    assert widget.status.value.startswith("cancelled")


@pytest.mark.parametrize("case", ["no image", "no model file", "too small", "missing file", "5D"])
def test_bad_input_shows_an_error_and_changes_nothing(viewer, qtbot, random_checkpoint, case, tmp_path):
    widget = _segment_widget(viewer)
    if case != "no image":
        size = 8 if case == "too small" else 32
        shape = (2, 2, 2, size, size) if case == "5D" else (size, size)
        viewer.add_image(np.zeros(shape, np.uint8), name="img")
        widget.image.value = viewer.layers["img"]
    if case == "no model file":
        widget.settings.model.value = "<file>"
        widget.settings.model_file.value = ""
    elif case == "missing file":
        widget.settings.model.value = "<file>"
        widget.settings.model_file.value = tmp_path / "nope.pt"
    else:
        widget.select_model(random_checkpoint)
    names = [l.name for l in viewer.layers]
    before = len(notifications())
    _run(qtbot, widget)
    errors = errors_since(before)
    assert len(errors) == 1 and errors[0].startswith("LiteNeXt Segment")
    assert {"no image": "no Image layer", "no model file": "choose a model checkpoint",
            "too small": "at least 16 x 16", "missing file": "is not a file", "5D": "5 dimensions"}[case] in errors[0]
    assert [l.name for l in viewer.layers] == names


def test_session_models_appear_in_the_model_picker(viewer, random_checkpoint):
    from napari_litenext.plugin.widgets._state import session_models

    widget = _segment_widget(viewer)
    session_models.add("fresh", random_checkpoint, 0.5)
    values = widget.settings.model.choices
    assert str(random_checkpoint.resolve()) in values and "<file>" in values


def test_closing_the_dock_cancels_segmentation(viewer, qtbot, random_checkpoint, rng):
    layer = viewer.add_image(rng.integers(0, 255, (1024, 1024), dtype=np.uint8), name="big")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    widget.select_model(random_checkpoint)
    widget.image.value = layer
    widget.run()
    worker = widget.worker
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert [l.name for l in viewer.layers] == ["big"]


def test_bundled_models_are_listed_and_chosen_by_default(make_napari_viewer, qtbot, random_checkpoint, tmp_path,
                                                         monkeypatch):
    import shutil

    from napari_litenext.network import registry

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(random_checkpoint, models / "nuclei.pt")
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = _segment_widget(viewer)
    assert widget.settings.model.value == "nuclei"
    combo = widget.settings.model.native
    assert "nuclei (bundled)" in [combo.itemText(i) for i in range(combo.count())]
    widget.image.value = layer
    _run(qtbot, widget)
    assert widget.last_error is None and viewer.layers["img labels"].metadata["litenext"]["model"] == "random"
