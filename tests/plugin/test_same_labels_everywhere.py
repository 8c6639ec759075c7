"""One owner per setting: the CLI, the API and the Segment widget give the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from _widgets_support import PLUGIN, isolated_widget_state, open_widget, skip_without_display, \
    wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui

SAMPLES = ("fluorescence", "stained", "brightfield")


@pytest.fixture
def nuclei():
    import napari_litenext as nl

    if "nuclei" not in nl.bundled_models():
        pytest.skip("the bundled nuclei model is not installed")
    return nl.load_model("nuclei", device="cpu")


def _cli_labels(path, out, *extra):
    from napari_litenext.cli import main

    assert main(["predict", str(path), "-o", str(out), "--device", "cpu", "-q", *extra]) == 0
    return tifffile.imread(out / f"{path.stem}_labels.tif")


def _widget_labels(viewer, qtbot, widget, key):
    layer = viewer.open_sample(PLUGIN, key)[0]
    widget.image.value = layer
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_error is None, widget.last_error
    return viewer.layers[f"{layer.name} labels"].data


def test_default_settings_give_identical_labels(viewer, qtbot, tmp_path, nuclei):
    import napari_litenext as nl
    from napari_litenext.io.images import read_image_with_axes
    from napari_litenext.plugin.sample_data import SAMPLE_DIR

    widget = open_widget(viewer, "Segment")
    widget.settings.device.value = "cpu"
    assert widget.settings.model.value == "nuclei"
    qtbot.waitUntil(lambda: widget.model_values.source == "nuclei", timeout=30_000)
    # the form shows the model's own values, not defaults of its own
    s = widget.settings
    assert (s.min_size.value, s.instances.value, s.threshold.value) == (30, True, pytest.approx(0.5))
    for key in SAMPLES:
        path = SAMPLE_DIR / "images" / f"{key}.tif"
        cli = _cli_labels(path, tmp_path / key)
        image, axes = read_image_with_axes(path)
        api = nl.predict(image, nuclei, axes=axes).labels
        gui = _widget_labels(viewer, qtbot, widget, key)
        assert cli.dtype == api.dtype == gui.dtype == np.int32  # instances: the model's setting
        assert api.max() > 5
        np.testing.assert_array_equal(cli, api)
        np.testing.assert_array_equal(gui, api)


def test_a_changed_setting_is_the_only_override(viewer, qtbot, tmp_path, nuclei):
    from napari_litenext.plugin.sample_data import SAMPLE_DIR

    widget = open_widget(viewer, "Segment")
    widget.settings.device.value = "cpu"
    qtbot.waitUntil(lambda: widget.model_values.source == "nuclei", timeout=30_000)
    widget.settings.min_size.value = 0
    assert widget.model_values.overrides() == {"min_size": 0}
    path = SAMPLE_DIR / "images" / "fluorescence.tif"
    gui = _widget_labels(viewer, qtbot, widget, "fluorescence")
    np.testing.assert_array_equal(gui, _cli_labels(path, tmp_path / "a", "--min-size", "0"))
    assert not np.array_equal(gui, _cli_labels(path, tmp_path / "b"))  # the model's 30 px would differ
