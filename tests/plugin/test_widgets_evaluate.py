"""The Evaluate widget in a real napari viewer: known scores from hand-made label layers and folders."""

from __future__ import annotations

import numpy as np
import pytest

from _widgets_support import PLUGIN, errors_since, isolated_widget_state, labels_like, notifications, open_widget, \
    skip_without_display, wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui


def _evaluate_widget(viewer):
    return open_widget(viewer, "Evaluate")


def _cell(widget, row, header):
    t = widget.table
    col = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())].index(header)
    return t.item(row, col).text()


def test_evaluate_widget_opens_from_its_menu_command(viewer):
    from napari._app_model import get_app_model

    get_app_model().commands.execute_command("napari-litenext.evaluate_widget").result()
    assert any(n.startswith("Evaluate") for n in viewer.window._wrapped_dock_widgets)


def _score_layers(viewer, qtbot, gt, pred, instances):
    """Evaluate Labels layers "pred" against "truth" in the widget and wait for the result."""
    viewer.add_labels(gt, name="truth")
    viewer.add_labels(pred, name="pred")
    widget = _evaluate_widget(viewer)
    widget.prediction.value = viewer.layers["pred"]
    widget.ground_truth.value = viewer.layers["truth"]
    widget.settings.instances.value = instances
    widget.run()
    wait_idle(qtbot, widget)
    return widget


def test_scores_two_label_layers(viewer, qtbot):
    gt = labels_like((20, 20), [(0, 4, 0, 4), (10, 14, 10, 14)])  # two 16-pixel objects
    pred = labels_like((20, 20), [(0, 4, 0, 4)])  # finds one exactly, misses the other
    widget = _score_layers(viewer, qtbot, gt, pred, instances=True)
    assert widget.last_error is None
    means = widget.result.means
    assert means["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert means["iou"] == pytest.approx(0.5) and means["precision"] == pytest.approx(1.0)
    assert means["recall"] == pytest.approx(0.5) and means["f1_50"] == pytest.approx(2 / 3)
    assert means["aji"] == pytest.approx(16 / 32)
    assert widget.table.rowCount() == 2  # one image and the mean
    assert _cell(widget, 0, "image") == "pred" and _cell(widget, 1, "image") == "mean (1)"
    assert _cell(widget, 0, "Dice") == "0.6667" and _cell(widget, 0, "# GT") == "2"
    text = widget.table_text().splitlines()
    assert text[0].split("\t")[:3] == ["image", "Dice", "IoU"] and len(text) == 3


def test_stacks_are_scored_per_slice_and_semantic_only_without_object_scores(viewer, qtbot):
    gt = labels_like((3, 16, 16), [(2, 8, 2, 8)])
    pred = gt.copy()
    pred[2] = 0  # last slice missed entirely
    widget = _score_layers(viewer, qtbot, gt, pred, instances=False)
    rows = widget.result.rows
    assert [r["name"] for r in rows] == ["slice 0", "slice 1", "slice 2"]
    assert [r["dice"] for r in rows] == [1.0, 1.0, 0.0]
    assert widget.result.means["dice"] == pytest.approx(2 / 3)
    headers = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    assert headers == ["image", "Dice", "IoU", "precision", "recall"]


def test_folder_pair_of_predictions_and_ground_truth(viewer, qtbot, tmp_path):
    from napari_litenext.io.images import write_tiff

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name, shift in (("a", 0), ("b", 4)):
        write_tiff(tmp_path / "gt" / f"{name}.tif", labels_like((16, 16), [(0, 8, 0, 8)]).astype(np.uint16))
        write_tiff(tmp_path / "pred" / f"{name}_labels.tif",
                   labels_like((16, 16), [(shift, 8 + shift, 0, 8)]).astype(np.uint16))
    widget = _evaluate_widget(viewer)
    widget.settings.source.value = "folders"
    assert widget.layer_pickers.native.isHidden()
    widget.settings.predictions_folder.value = tmp_path / "pred"
    widget.settings.ground_truth_folder.value = tmp_path / "gt"
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_error is None
    rows = {r["name"]: r for r in widget.result.rows}
    assert rows["a"]["dice"] == 1.0 and rows["b"]["dice"] == pytest.approx(0.5)


@pytest.mark.parametrize("case", ["none", "same layer", "shape mismatch", "empty truth", "unpaired folders"])
def test_bad_input_shows_an_error_and_changes_nothing(viewer, qtbot, tmp_path, case):
    widget = _evaluate_widget(viewer)
    truth = viewer.add_labels(labels_like((16, 16), [(0, 4, 0, 4)]), name="truth")
    if case == "same layer":
        widget.prediction.value = widget.ground_truth.value = truth
    elif case == "shape mismatch":
        widget.prediction.value = viewer.add_labels(np.zeros((16, 17), np.int32), name="pred")
        widget.ground_truth.value = truth
    elif case == "empty truth":
        widget.prediction.value = truth
        widget.ground_truth.value = viewer.add_labels(np.zeros((16, 16), np.int32), name="blank")
    elif case == "none":
        viewer.layers.clear()
    else:
        from napari_litenext.io.images import write_tiff

        (tmp_path / "gt").mkdir()
        (tmp_path / "pred").mkdir()
        write_tiff(tmp_path / "gt" / "a.tif", np.ones((8, 8), np.uint8))
        write_tiff(tmp_path / "pred" / "zzz_labels.tif", np.ones((8, 8), np.uint8))
        widget.settings.source.value = "folders"
        widget.settings.predictions_folder.value = tmp_path / "pred"
        widget.settings.ground_truth_folder.value = tmp_path / "gt"
    names = [l.name for l in viewer.layers]
    before = len(notifications())
    widget.run()
    wait_idle(qtbot, widget)
    errors = errors_since(before)
    assert len(errors) == 1 and errors[0].startswith("LiteNeXt Evaluate")
    assert {"none": "choose a prediction", "same layer": "same layer", "shape mismatch": "16 x 16",
            "empty truth": "is empty", "unpaired folders": "pairing ground truth"}[case] in errors[0]
    assert widget.result is None and widget.table.rowCount() == 0
    assert [l.name for l in viewer.layers] == names
