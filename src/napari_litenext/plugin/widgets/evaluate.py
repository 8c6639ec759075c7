"""The Evaluate widget: score prediction Labels against ground-truth Labels, or a folder pair.

A table lists Dice, IoU, precision and recall per image (per slice for stacks) and their means;
with "object scores" also F1 at IoU 0.5 and AJI. Scoring runs in a thread worker
(``evaluation.evaluate_arrays``; numpy only, no torch).
"""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

from pathlib import Path
from typing import Any

import numpy as np
from magicgui import magicgui
from magicgui.widgets import Container, PushButton
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtGui import QFont, QGuiApplication
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ._common import status_label, LayerChoices, report_error

__all__ = ["EvaluateWidget", "evaluate_settings", "COLUMNS"]

#: Table columns: (result key, header).
COLUMNS = (("dice", "Dice"), ("iou", "IoU"), ("precision", "precision"), ("recall", "recall"),
           ("f1_50", "F1@0.5"), ("aji", "AJI"), ("n_pred", "# pred"), ("n_gt", "# GT"))
_INSTANCE_KEYS = ("f1_50", "aji", "n_pred", "n_gt")


def evaluate_settings(source: str = "layers", predictions_folder: Path = Path(""),
                      ground_truth_folder: Path = Path(""), instances: bool = True) -> None:
    """Settings of the Evaluate widget (persisted)."""


_OPTIONS: dict[str, dict[str, Any]] = {
    "source": {"widget_type": "RadioButtons", "choices": ("layers", "folders"), "orientation": "horizontal",
               "label": "compare"},
    "predictions_folder": {"label": "predictions", "mode": "d",
                           "tooltip": "label images named like the ground truth, optionally ending in _labels "
                                      "(as 'napari-litenext predict' writes them)"},
    "ground_truth_folder": {"label": "ground truth", "mode": "d"},
    "instances": {"label": "object scores", "tooltip": "also F1 at IoU 0.5 and AJI (binary masks are split into "
                                                       "connected components)"},
}


class EvaluateWidget(QWidget):
    """Dice, IoU, precision, recall (and F1@0.5, AJI) of predictions against ground truth."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._layers = LayerChoices(napari_viewer)
        self.prediction = self._layers.combo(Labels, "prediction")
        self.ground_truth = self._layers.combo(Labels, "ground truth")
        self.settings = magicgui(evaluate_settings, persist=True, call_button=False, **_OPTIONS)
        self.layer_pickers = Container(widgets=[self.prediction, self.ground_truth])
        self.layer_pickers.margins = (0, 0, 0, 0)
        self.run_button = PushButton(text="Evaluate")
        self.copy_button = PushButton(text="Copy table", enabled=False)
        self.status = status_label(2)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(160)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.settings.native)
        layout.addWidget(self.layer_pickers.native)
        buttons = Container(widgets=[self.run_button, self.copy_button], layout="horizontal", labels=False)
        layout.addWidget(buttons.native)
        layout.addWidget(self.status.native)
        layout.addWidget(self.table, 1)

        self.worker: Any = None
        self.result: Any = None
        self.last_error: str | None = None
        self.run_button.changed.connect(self.run)
        self.copy_button.changed.connect(self.copy_table)
        self.settings.source.changed.connect(self._update_visibility)
        self._update_visibility()

    def reset_choices(self, *_: Any) -> None:
        """Re-read the layer list (napari calls this when layers change)."""
        self._layers.reset()

    def _update_visibility(self, *_: Any) -> None:
        folders = self.settings.source.value == "folders"
        self.layer_pickers.visible = not folders
        self.settings.predictions_folder.visible = self.settings.ground_truth_folder.visible = folders

    def _fail(self, message: str) -> None:
        self.last_error = message
        self.status.value = message
        show_error(f"LiteNeXt Evaluate: {message}")

    def _layer_arrays(self) -> tuple[list[np.ndarray], list[np.ndarray], list[str]] | None:
        pred_layer, gt_layer = self.prediction.value, self.ground_truth.value
        if pred_layer is None or gt_layer is None:
            self._fail("choose a prediction and a ground-truth Labels layer")
            return None
        if pred_layer is gt_layer:
            self._fail("the prediction and the ground truth are the same layer; choose two layers")
            return None
        pred, gt = np.asarray(pred_layer.data), np.asarray(gt_layer.data)
        if pred.shape != gt.shape:
            self._fail(f"prediction {pred_layer.name!r} is {_shape(pred.shape)} but ground truth "
                       f"{gt_layer.name!r} is {_shape(gt.shape)}; compare layers of the same shape")
            return None
        if not np.any(gt):
            self._fail(f"ground truth {gt_layer.name!r} is empty; paint or load the true labels first")
            return None
        if pred.ndim == 2:
            return [pred], [gt], [pred_layer.name]
        flat_p = pred.reshape((-1,) + pred.shape[-2:])
        flat_g = gt.reshape((-1,) + gt.shape[-2:])
        return list(flat_p), list(flat_g), [f"slice {i}" for i in range(flat_p.shape[0])]

    def run(self, *_: Any) -> None:
        """Score in a thread worker and fill the table; bad input shows an error and changes nothing."""
        if self.worker is not None:
            return
        instances = bool(self.settings.instances.value)
        if self.settings.source.value == "folders":
            pred_dir = _folder(self.settings.predictions_folder.value)
            gt_dir = _folder(self.settings.ground_truth_folder.value)
            if pred_dir is None or gt_dir is None:
                self._fail("choose the predictions folder and the ground-truth folder")
                return
            self.worker = create_worker(_folder_job, pred_dir, gt_dir, instances, _start_thread=False,
                                        _ignore_errors=True)
        else:
            arrays = self._layer_arrays()
            if arrays is None:
                return
            preds, gts, names = arrays
            self.worker = create_worker(_arrays_job, preds, gts, names, instances, _start_thread=False,
                                        _ignore_errors=True)
        self.last_error = None
        self.worker.yielded.connect(lambda text: setattr(self.status, "value", text))
        self.worker.returned.connect(self._on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.status.value = "scoring..."
        self.worker.start()

    def _on_result(self, result: Any) -> None:
        self.result = result
        self.fill_table(result)
        n = int(result.means.get("n_images", len(result.rows)))
        text = f"{n} image{'s' if n != 1 else ''} scored; mean Dice {result.means.get('dice', float('nan')):.4f}"
        if "aji" in result.means:
            text += f", F1@0.5 {result.means['f1_50']:.4f}, AJI {result.means['aji']:.4f}"
        self.status.value = "; ".join([text, *result.notes])
        self.copy_button.enabled = True

    def _on_error(self, exc: BaseException) -> None:
        self.last_error = report_error("LiteNeXt Evaluate", exc)
        self.status.value = self.last_error

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.enabled = True

    def fill_table(self, result: Any) -> None:
        """Show one row per image and a bold mean row."""
        keys = [(k, h) for k, h in COLUMNS if k in result.means]
        table = self.table
        table.clear()
        table.setColumnCount(len(keys) + 1)
        table.setRowCount(len(result.rows) + 1)
        table.setHorizontalHeaderLabels(["image"] + [h for _, h in keys])
        for r, row in enumerate(result.rows):
            table.setItem(r, 0, QTableWidgetItem(str(row.get("name", r))))
            for c, (key, _) in enumerate(keys, start=1):
                table.setItem(r, c, QTableWidgetItem(_number(key, row.get(key))))
        last = len(result.rows)
        bold = QFont()
        bold.setBold(True)
        mean_item = QTableWidgetItem(f"mean ({len(result.rows)})")
        mean_item.setFont(bold)
        table.setItem(last, 0, mean_item)
        for c, (key, _) in enumerate(keys, start=1):
            item = QTableWidgetItem(_number(key, result.means.get(key), mean=True))
            item.setFont(bold)
            table.setItem(last, c, item)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def table_text(self) -> str:
        """The table as tab-separated text (header, rows, mean)."""
        t = self.table
        lines = ["\t".join(t.horizontalHeaderItem(c).text() for c in range(t.columnCount()))]
        for r in range(t.rowCount()):
            lines.append("\t".join((t.item(r, c).text() if t.item(r, c) else "") for c in range(t.columnCount())))
        return "\n".join(lines)

    def copy_table(self, *_: Any) -> None:
        """Copy the table to the clipboard as tab-separated text (pastes into spreadsheets)."""
        QGuiApplication.clipboard().setText(self.table_text())
        self.status.value = "table copied to the clipboard"


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def _number(key: str, value: Any, mean: bool = False) -> str:
    if value is None:
        return ""
    if key.startswith("n_"):
        return f"{float(value):.1f}" if mean else str(int(value))
    return f"{float(value):.4f}"


def _folder(value: Any) -> Path | None:
    text = str(value or "").strip()
    return Path(text).expanduser() if text and text != "." else None


def _arrays_job(preds: list[np.ndarray], gts: list[np.ndarray], names: list[str], instances: bool):
    from ...inference.evaluate import evaluate_arrays

    yield f"scoring {len(preds)} image{'s' if len(preds) != 1 else ''}..."
    return evaluate_arrays(preds, gts, instances=instances, names=names)


def _folder_job(pred_dir: Path, gt_dir: Path, instances: bool):
    """Pair ground truth with predictions by name (``evaluation.pair_files``), read, score."""
    from ...inference.evaluate import EvaluationError, evaluate_arrays, pair_files
    from ...io.images import read_mask

    try:
        pairs = pair_files(gt_dir, pred_dir)
    except EvaluationError as exc:
        raise EvaluationError(f"pairing ground truth ({gt_dir}) with predictions ({pred_dir}): {exc}") from None
    preds, gts, names = [], [], []
    for i, (name, gt_path, pred_path) in enumerate(pairs):
        yield f"reading {i + 1}/{len(pairs)}: {name}"
        gts.append(read_mask(gt_path))
        preds.append(read_mask(pred_path))
        names.append(name)
    yield f"scoring {len(pairs)} images..."
    return evaluate_arrays(preds, gts, instances=instances, names=names)
