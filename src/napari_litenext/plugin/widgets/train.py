"""The Train widget: train LiteNeXt on painted layers (or folders) in a thread worker.

While ``training.train`` runs in the worker, every step's event updates a progress bar with ETA and a
live plot of the training loss and validation Dice; Stop ends the run after the current step and
keeps the best checkpoint. When the run ends its best.pt joins the model pickers (``_state``) and
"Segment with this model" runs it on the current image. Settings persist between sessions
(magicgui ``persist``); layer choices do not.
"""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

from pathlib import Path
from typing import Any

from magicgui import magicgui
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from ...errors import LiteNeXtError
from ._common import FILE_CHOICE, SCRATCH_CHOICE, LayerChoices, ModelValues, RunStopper, report_error, \
    resolve_model_choice, start_run, status_label
from ._layers import full_resolution
from ._train_settings import INHERITED_FIELDS, RECIPE_OPTIONS, SOURCE_OPTIONS, VALIDATION_CHOICES, \
    VALIDATION_OPTIONS, recipe_settings, source_settings, validation_settings
from ._export import ask_export_path, export_from
from ._train_form import OUTPUT_ROOT, TrainFormReader
from ._train_job import clock, gather_samples, train_job
from ._state import session_models
from .plot import CurvePlot

__all__ = ["TrainWidget", "source_settings", "validation_settings", "recipe_settings", "OUTPUT_ROOT",
           "VALIDATION_CHOICES"]

#: Shortest time between updates of the progress bars and status line, and of the plot (ms).
UI_INTERVAL_MS = 500
PLOT_INTERVAL_MS = 1000


class TrainWidget(TrainFormReader, QWidget):
    """Train a model from Image + Labels layers or folders, with live curves and a Stop button."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._layers = LayerChoices(napari_viewer)
        self.source = magicgui(source_settings, persist=True, call_button=False, **SOURCE_OPTIONS)
        self.validation = magicgui(validation_settings, persist=True, call_button=False, **VALIDATION_OPTIONS)
        self.recipe = magicgui(recipe_settings, persist=True, call_button=False, **RECIPE_OPTIONS)
        self.start_values = ModelValues(self.recipe, INHERITED_FIELDS)

        self.pairs = Container(labels=False)
        self.pairs.margins = (0, 0, 0, 0)
        self.add_pair_button = PushButton(text="+ add pair")
        self.pairs_box = Container(widgets=[Label(value="image  /  labels painted on it"), self.pairs,
                                            self.add_pair_button], labels=False)
        self.pairs_box.margins = (0, 0, 0, 0)
        self.val_image = self._layers.combo(Image, "validation image")
        self.val_labels = self._layers.combo(Labels, "validation labels")
        self.val_pair = Container(widgets=[self.val_image, self.val_labels])
        self.val_pair.margins = (0, 0, 0, 0)

        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="")
        self.status = status_label(3)
        self.plot = CurvePlot(min_interval_ms=PLOT_INTERVAL_MS)
        self.segment_button = PushButton(text="Segment current image with this model", enabled=False)
        self.export_button = PushButton(text="Export this model...", enabled=False,
                                        tooltip="as a BioImage Model Zoo package (.zip) or an ONNX file")
        self.export_worker: Any = None

        recipe_box = QCollapsible("Recipe and output")
        recipe_box.addWidget(self.recipe.native)
        recipe_box.expand(animate=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.source.native)
        layout.addWidget(self.pairs_box.native)
        layout.addWidget(self.validation.native)
        layout.addWidget(self.val_pair.native)
        layout.addWidget(recipe_box)
        buttons = Container(widgets=[self.train_button, self.stop_button], layout="horizontal", labels=False)
        for widget in (buttons, self.progress, self.status):
            layout.addWidget(widget.native)
        layout.addWidget(self.plot)
        layout.addWidget(self.segment_button.native)
        layout.addWidget(self.export_button.native)
        layout.addStretch(1)
        self.recipe_box = recipe_box

        self.worker: Any = None
        self._runs = RunStopper(self, self.stop)
        self.result: Any = None
        self.last_error: str | None = None
        self.events: list[Any] = []
        self._stop = None
        self._config: Any = None
        self._first_image: Image | None = None
        self._latest_step: Any = None
        self._finished_run = False
        self._ui_timer = QTimer(self)
        self._ui_timer.setSingleShot(True)
        self._ui_timer.setInterval(UI_INTERVAL_MS)
        self._ui_timer.timeout.connect(self._show_progress)

        self.add_pair_button.changed.connect(lambda *_: self.add_pair())
        self.train_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.segment_button.changed.connect(self.segment_current_image)
        self.export_button.changed.connect(self._ask_export)
        for widget in (self.source.source, self.validation.validation, self.recipe.loss, self.recipe.srp,
                       self.recipe.start_from):
            widget.changed.connect(self._update_visibility)
        self.recipe.mwl_preset.changed.connect(self._apply_preset)
        self.recipe.start_from.changed.connect(self._on_start_changed)
        self.recipe.start_file.changed.connect(self._on_start_changed)
        session_models.changed.connect(self._on_session_models)
        self.add_pair()
        self._update_visibility()
        self._on_start_changed()

    # ------------------------------------------------------------------ form

    def add_pair(self, image: Image | None = None, labels: Labels | None = None) -> Container:
        """Add an image / labels row (optionally preselected) and return it."""
        image_box = self._layers.combo(Image, "image")
        labels_box = self._layers.combo(Labels, "labels")
        remove = PushButton(text="x", tooltip="remove this pair")
        row = Container(widgets=[image_box, labels_box, remove], layout="horizontal", labels=False)
        row.margins = (0, 0, 0, 0)
        remove.native.setMaximumWidth(28)
        remove.changed.connect(lambda *_: self.remove_pair(row))
        image_box.changed.connect(lambda *_: self._suggest_labels(image_box, labels_box))
        self.pairs.append(row)
        if image is not None:
            image_box.value = image
        self._suggest_labels(image_box, labels_box)
        if labels is not None:
            labels_box.value = labels
        return row

    def remove_pair(self, row: Container) -> None:
        """Remove a row (the last one stays)."""
        if len(self.pairs) <= 1:
            return
        for box in list(row)[:2]:
            self._layers.forget(box)
        self.pairs.remove(row)

    def pair_rows(self) -> list[tuple[ComboBox, ComboBox]]:
        """(image ComboBox, labels ComboBox) per row."""
        return [(row[0], row[1]) for row in self.pairs]

    def _suggest_labels(self, image_box: ComboBox, labels_box: ComboBox) -> None:
        image = image_box.value
        if image is None:
            return
        yx = tuple(full_resolution(image.data, image.multiscale).shape)
        yx = yx[:-1] if image.rgb else yx
        current = labels_box.value
        if current is not None and tuple(current.data.shape) == yx:
            return
        for layer in labels_box.choices:
            if tuple(layer.data.shape) == yx:
                labels_box.value = layer
                return

    def reset_choices(self, *_: Any) -> None:
        """Re-read layers and models (napari calls this when layers change)."""
        self._layers.reset()
        self.recipe.start_from.reset_choices()

    def _on_session_models(self) -> None:
        try:
            self.recipe.start_from.reset_choices()
        except RuntimeError:
            session_models.changed.disconnect(self._on_session_models)

    def _update_visibility(self, *_: Any) -> None:
        d, v_, r = self.source, self.validation, self.recipe
        folders = d.source.value == "folders"
        self.pairs_box.visible = not folders
        d.images_folder.visible = d.masks_folder.visible = folders
        d.crop_to_painted.visible = not folders
        d = v_
        v = d.validation.value
        d.val_fraction.visible = v in ("fraction", "auto")
        d.val_images_folder.visible = d.val_masks_folder.visible = v == "folders"
        self.val_pair.visible = v == "layers"
        mwl = r.loss.value == "mwl"
        for name in ("mwl_preset", "w_background", "w_object", "w_margin", "margin_kernel"):
            getattr(r, name).visible = mwl
        r.srp_lambda.visible = bool(r.srp.value)
        r.start_file.visible = r.start_from.value == FILE_CHOICE

    def _on_start_changed(self, *_: Any) -> None:
        """Show the starting model's mode, patch size and normalisation (fine-tuning keeps them)."""
        r = self.recipe
        if r.start_from.value == SCRATCH_CHOICE:
            self.start_values.source = None
            return
        try:
            source = resolve_model_choice(r.start_from.value, r.start_file.value)
        except ValueError:  # no file chosen yet
            return
        if source != self.start_values.source:
            self.start_values.load(source)

    def _apply_preset(self, *_: Any) -> None:
        from ...training.config import MWL_PRESETS

        values = MWL_PRESETS[self.recipe.mwl_preset.value]
        r = self.recipe
        r.w_background.value, r.w_object.value = values["w_b"], values["w_o"]
        r.w_margin.value, r.margin_kernel.value = values["w_m"], values["kernel_size"]

    # ------------------------------------------------------------------ running

    def start(self, *_: Any) -> None:
        """Check the form, then train in a thread worker; bad input shows an error and changes nothing."""
        if self.running:
            show_info("LiteNeXt: training is already running; stop it first")
            return
        try:
            spec = self.data_spec()
            # Layers are checked now (fast, and errors come before anything starts); folders are
            # read in the worker, where reading hundreds of files does not freeze the viewer.
            data = spec if spec.reads_files else gather_samples(spec)
            out = self.output_dir()
            cfg = self.build_config(out)
        except (LiteNeXtError, ValueError, FileExistsError) as exc:
            self.last_error = report_error("LiteNeXt Train", exc)
            self.status.value = self.last_error
            return
        self.last_error = None
        self.result = None
        self.events = []
        self._latest_step = None
        self._finished_run = False
        self._config = cfg
        pairs = self.pair_rows()
        self._first_image = pairs[0][0].value if pairs and self.source.source.value == "layers" else None
        self._stop, should_stop = self._runs.new_run()
        self.plot.clear()
        self.progress.max, self.progress.value = 1, 0
        self.segment_button.enabled = False
        self.export_button.enabled = False
        self.worker = start_run(train_job, data, cfg, should_stop, on_event=self._on_event, on_result=self._on_result,
                                on_error=self._on_error, on_finished=self._on_finished, run_button=self.train_button,
                                stop_button=self.stop_button, status=self.status,
                                message="reading the images..." if spec.reads_files else "preparing the images...")

    @property
    def running(self) -> bool:
        """Training is in progress."""
        return self.worker is not None

    def stop(self, *_: Any) -> None:
        """End training after the current step; the best checkpoint so far is kept."""
        if self.running:
            self._runs.stop_current(self.stop_button, self.status,
                                    "stopping after this step; the best checkpoint is kept...")

    def _on_event(self, event: Any) -> None:
        if self._finished_run:
            return  # Qt may deliver the last events after the result
        self.events.append(event)
        kind = event.kind
        if kind == "data":
            if event.note:
                show_warning(f"LiteNeXt Train: {event.note}")
            return
        if kind == "start":
            self.progress.max = max(1, event.total_steps)
            self.progress.value = event.global_step
            self.status.value = event.message
            show_info(f"LiteNeXt: {event.message}")  # last: showing it may process pending events
        elif kind == "step":
            self._latest_step = event
            if event.steps_per_epoch:
                self.plot.add_step(event.global_step / event.steps_per_epoch, event.loss)
            if not self._ui_timer.isActive():
                self._ui_timer.start()
        elif kind == "epoch":
            self.plot.add_epoch({"epoch": event.epoch, "loss": event.loss, "val_dice": event.val_dice})
        elif kind in ("done", "stopped"):
            self._show_progress()
            self.status.value = event.message

    def _show_progress(self) -> None:
        """Show the latest step in the progress bars and status line.

        Called at most every ``UI_INTERVAL_MS``, not at every step: each repaint of the dock costs
        the GUI thread, and without a GPU (remote desktops, Xvfb) also CPU that training needs.
        Training has no napari activity-panel progress bar: while one is active napari keeps
        repainting its status bar, which halved the training speed on two cores without a GPU.
        """
        event = self._latest_step
        if event is None:
            return
        self.progress.value = min(event.global_step, self.progress.max)
        if self._stop is not None and self._stop.is_set():
            return  # keep "stopping..." on screen
        best = "-" if event.best_val_dice is None else f"{event.best_val_dice:.3f}"
        self.status.value = (f"epoch {event.epoch}/{event.epochs}, step {event.global_step}/{event.total_steps}"
                             f", loss {event.loss:.4f}, best Dice {best}, ETA {clock(event.eta_s)}")

    def _on_result(self, result: Any) -> None:
        self._finished_run = True
        self._ui_timer.stop()
        self.result = result
        cfg = self._config
        if result.checkpoint is None:
            show_warning("LiteNeXt: training ended before any validation; no model was saved")
            return
        session_models.add(cfg.name, result.checkpoint, result.best_val_dice)
        self.segment_button.enabled = True
        self.export_button.enabled = True
        dice = "-" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
        verb = "stopped" if result.stopped else "finished"
        message = (f"LiteNeXt training {verb}: best validation Dice {dice} at epoch {result.best_epoch}; "
                   f"model {cfg.name!r} saved to {result.checkpoint} and added to the Segment widget")
        show_info(message)
        self.status.value = message

    def _on_error(self, exc: BaseException) -> None:
        self._finished_run = True
        self.last_error = report_error("LiteNeXt Train", exc)
        self.status.value = self.last_error

    def _on_finished(self) -> None:
        self.worker = None
        self._ui_timer.stop()
        self.train_button.enabled = True
        self.stop_button.enabled = False
        self.plot.redraw()

    def _ask_export(self, *_: Any) -> None:
        if self.result is None or self.result.checkpoint is None:
            return
        path = ask_export_path(self, self.result.config.name)
        if path is not None:
            self.export_model(path)

    def export_model(self, path: str | Path) -> Any:
        """Export the model just trained (its best.pt) to ``path`` (``.zip`` or ``.onnx``) in a thread worker."""
        if self.result is None or self.result.checkpoint is None:
            show_error("LiteNeXt: no model trained yet")
            return None
        return export_from(self, self.result.checkpoint, path, self.export_button)

    def segment_current_image(self, *_: Any) -> Any:
        """Open the Segment widget and run the model just trained on the selected (or training) image."""
        if self.result is None or self.result.checkpoint is None:
            show_error("LiteNeXt: no model trained yet")
            return None
        active = self.viewer.layers.selection.active
        layer = active if isinstance(active, Image) else self._first_image
        if layer is None or layer not in self.viewer.layers:
            show_error("LiteNeXt: select an Image layer to segment")
            return None
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-litenext", "Segment")
        widget.segment_with(self.result.checkpoint, layer)
        return widget

