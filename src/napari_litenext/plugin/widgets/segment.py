"""The Segment widget: run a LiteNeXt model on an Image layer in a thread worker.

Output is one Labels layer named ``"<image> labels"`` with the image's scale and translate (one
stack for a stack), and optionally a ``"<image> probability"`` Image layer. Running again on the
same image replaces those layers' data. Changing the threshold, minimum size, instance splitting,
linking through Z or "adapt to objects" afterwards re-runs only the post-processing on the kept
probabilities, not the network; a new object size takes effect at the next run.
"""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui import magicgui
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ._browse import Browser, is_lazy_layer_data, lazy_output, open_for_painting
from ._common import FILE_CHOICE, LayerChoices, ModelValues, RunStopper, load_model_cached, model_choices, \
    report_error, resolve_model_choice, start_run, status_label
from ._export import ask_export_path, export_from
from ._outputs import put_labels, put_probabilities
from ._segment_folder import FolderSource
from ._segment_settings import MODEL_FIELDS, NO_CHANNEL_AXIS, REAPPLIED_FIELDS, SETTINGS_OPTIONS, SHOWN, \
    axes_with_channel, channel_axis_choices, segment_settings
from ._layers import full_resolution, layer_axes, output_geometry
from ._state import session_models

__all__ = ["SegmentWidget", "segment_settings"]

_REAPPLY_DELAY_MS = 200


@dataclass
class _Result:
    """What the last run left, so that post-processing can be re-applied."""

    image_name: str
    labels: Labels
    probabilities: np.ndarray
    settings: dict[str, Any]
    model_source: str


class SegmentWidget(QWidget):
    """Segment an Image layer with a bundled, session-trained or file model."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._layers = LayerChoices(napari_viewer)
        self.image = self._layers.combo(Image, "image", tooltip="2D, RGB, stacks (slice by slice), dask/zarr layers")
        self.channel_axis = ComboBox(label="channel axis", choices=self._channel_axis_choices,
                                     tooltip="for a multichannel layer (e.g. C x Y x X): the slider axis that holds "
                                             "channels, and the channel to segment")
        self.channel = SpinBox(label="channel", min=0, max=0)
        self.settings = magicgui(segment_settings, persist=True, call_button=False, **SETTINGS_OPTIONS)
        self.model_values = ModelValues(self.settings, MODEL_FIELDS, SHOWN)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.export_button = PushButton(text="Export model...",
                                        tooltip="the chosen model as a BioImage Model Zoo package (.zip) or ONNX file")
        self.status = status_label(2)
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        picker = Container(widgets=[self.image, self.channel_axis, self.channel])
        self.folder = FolderSource(self)  # the "folder" source: a folder of files into an output folder
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        for widget in (self.folder.container, picker, self.settings, buttons, self.export_button, self.status):
            layout.addWidget(widget.native)
        layout.addStretch(1)

        self.worker: Any = None
        self._runs = RunStopper(self, self.cancel)
        self.post_worker: Any = None
        self.last: _Result | None = None
        self.last_error: str | None = None
        self._stop = None
        self._progress: Any = None
        self._pending_reapply = False
        self._job: dict[str, Any] = {}
        self._reapply_timer = QTimer(self)
        self._reapply_timer.setSingleShot(True)
        self._reapply_timer.timeout.connect(self._reapply)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self._ask_export)
        self.export_worker: Any = None
        self.browser = Browser(self)
        self.settings.browse.changed.connect(self.browser.toggle)
        self.image.changed.connect(self._on_image_changed)
        self.channel_axis.changed.connect(self._on_channel_axis_changed)
        self.settings.model.changed.connect(self._on_model_changed)
        self.settings.model_file.changed.connect(self._on_model_changed)
        for name in REAPPLIED_FIELDS:
            getattr(self.settings, name).changed.connect(self._schedule_reapply)
        session_models.changed.connect(self._on_session_models)
        self._default_to_bundled()
        self._on_model_changed()
        self._on_image_changed()

    def _default_to_bundled(self) -> None:
        """Without a remembered choice, start on the first bundled model rather than a file field."""
        from ...network.registry import bundled_models

        s = self.settings
        unset = s.model.value == FILE_CHOICE and str(s.model_file.value or "").strip() in ("", ".")
        names = list(bundled_models())
        if unset and names:
            s.model.value = names[0]

    # ------------------------------------------------------------------ choices

    def reset_choices(self, *_: Any) -> None:
        """Re-read layers and models (napari calls this when layers change)."""
        self._layers.reset()
        self.settings.model.reset_choices()

    def _channel_axis_choices(self, *_: Any) -> list[tuple[str, int]]:
        layer = self.image.value
        if layer is None:
            return channel_axis_choices((), False)
        return channel_axis_choices(tuple(full_resolution(layer.data, layer.multiscale).shape), layer.rgb)

    def _on_image_changed(self, *_: Any) -> None:
        self.channel_axis.reset_choices()
        self.channel_axis.visible = len(self.channel_axis.choices) > 1
        self._on_channel_axis_changed()

    def _on_channel_axis_changed(self, *_: Any) -> None:
        axis, layer = self.channel_axis.value, self.image.value
        chosen = axis is not None and axis != NO_CHANNEL_AXIS and layer is not None
        self.channel.visible = chosen
        if chosen:
            self.channel.max = int(full_resolution(layer.data, layer.multiscale).shape[axis]) - 1

    def _on_session_models(self) -> None:
        try:
            self.settings.model.reset_choices()
        except RuntimeError:  # widget already deleted
            session_models.changed.disconnect(self._on_session_models)

    def _on_model_changed(self, *_: Any) -> None:
        self.settings.model_file.visible = self.settings.model.value == FILE_CHOICE
        try:
            source = resolve_model_choice(self.settings.model.value, self.settings.model_file.value)
        except ValueError:  # no file chosen yet
            return
        if source != self.model_values.source:
            self.model_values.load(source)

    def select_model(self, source: str | Path) -> None:
        """Choose a model by bundled name or checkpoint path (a session model, or else a file)."""
        self.settings.model.reset_choices()
        text = str(Path(source).resolve()) if Path(str(source)).exists() else str(source)
        values = [value for _, value in model_choices()]
        if text in values:
            self.settings.model.value = text
        else:
            self.settings.model.value = FILE_CHOICE
            self.settings.model_file.value = Path(text)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """A segmentation is in progress."""
        return self.worker is not None

    def run(self, *_: Any) -> None:
        """Segment the chosen image with the chosen model in a thread worker."""
        if self.running:
            show_info("LiteNeXt: a segmentation is already running; cancel it first")
            return
        if self.folder.active:
            self.folder.run()
            return
        layer = self.image.value
        if layer is None:
            self._fail("no Image layer: open an image (File > Open, or File > Open Sample > LiteNeXt) and "
                       "choose it under 'image'")
            return
        try:
            source = resolve_model_choice(self.settings.model.value, self.settings.model_file.value)
        except ValueError as exc:
            self._fail(str(exc))
            return
        data = full_resolution(layer.data, getattr(layer, "multiscale", False))
        s = self.settings
        kwargs = self.model_values.overrides()  # only what the user changed; the model owns the rest
        try:
            channel_axis = self.channel_axis.value if self.channel_axis.value is not None else NO_CHANNEL_AXIS
            kwargs["axes"] = axes_with_channel(layer_axes(len(data.shape), layer.rgb), channel_axis)
            if channel_axis != NO_CHANNEL_AXIS:
                kwargs["channel"] = int(self.channel.value)
        except ValueError as exc:
            self._fail(f"layer {layer.name!r}: {exc}")
            return
        device = str(s.device.value)
        if is_lazy_layer_data(data, getattr(layer, "multiscale", False)):
            # dask, zarr or a pyramid: the labels stream into a zarr store and are never whole in memory
            try:
                kwargs.update(out=lazy_output(layer.name, s.labels_store.value),
                              keep_probabilities=bool(s.probabilities.value))
            except FileExistsError as exc:
                self._fail(f"{exc}; pick a new labels store")
                return
        self._stop, should_stop = self._runs.new_run()
        self.last_error = None
        self._job = {"layer": layer, "source": source, "started": time.perf_counter(),
                     "probabilities": bool(s.probabilities.value)}
        self._progress = cancelable_progress(total=0, desc="LiteNeXt: loading model", cancel_callback=self.cancel)
        self.worker = start_run(_segment_job, data, source, device, kwargs, should_stop, on_event=self._on_progress,
                                on_result=self._on_result, on_error=self._on_error, on_finished=self._on_finished,
                                run_button=self.run_button, stop_button=self.cancel_button, status=self.status,
                                message=f"segmenting {layer.name!r}...")

    def segment_with(self, source: str | Path, layer: Image | None = None) -> None:
        """Choose ``source`` (and ``layer`` if given) and run: the Train widget's one-click path."""
        self.select_model(source)
        if layer is not None:
            self._layers.reset()
            self.image.value = layer
        self.run()

    def cancel(self, *_: Any) -> None:
        """Ask the running segmentation to stop at its next batch; nothing is added."""
        if self.running:
            self._runs.stop_current(self.cancel_button, self.status, "cancelling...")

    def _ask_export(self, *_: Any) -> None:
        try:
            source = resolve_model_choice(self.settings.model.value, self.settings.model_file.value)
        except ValueError as exc:
            self._fail(str(exc))
            return
        path = ask_export_path(self, Path(source).stem)
        if path is not None:
            self.export_model(path)

    def export_model(self, path: str | Path) -> None:
        """Export the chosen model to ``path`` (``.zip``: BioImage Model Zoo, ``.onnx``) in a thread worker."""
        source = resolve_model_choice(self.settings.model.value, self.settings.model_file.value)
        export_from(self, source, path, self.export_button)

    def _fail(self, message: str) -> None:
        self.last_error = message
        self.status.value = message
        show_error(f"LiteNeXt Segment: {message}")

    def _on_progress(self, step: Any) -> None:
        bar = self._progress
        if bar is None or self._job.get("done"):
            return
        # Status first: napari's progress bar processes pending events while it updates, which
        # can run _on_result and _on_finished in the middle of this call.
        self.status.value = step.message
        if step.stage == "model":
            bar.set_description(f"LiteNeXt: {step.message}")
            return
        if bar.total != step.total:
            bar.total = step.total
            bar.n = 0
            bar.set_description(f"LiteNeXt: {step.stage}")
        bar.update(step.done - bar.n)

    def _on_result(self, prediction: Any) -> None:
        job = self._job
        job["done"] = True
        layer = job["layer"]
        if layer not in self.viewer.layers:
            self._fail(f"layer {layer.name!r} was removed while it was segmented; nothing added")
            return
        settings = dict(prediction.settings, source_layer=layer.name, model_source=job["source"])
        scale, translate = output_geometry(layer.scale, layer.translate, layer.rgb, settings["input_axes"],
                                           settings["axes"])
        stored = "store" in settings  # a lazy image: the labels stay on disk, writable for painting
        data = open_for_painting(settings["store"]) if stored else prediction.labels
        labels = put_labels(self.viewer, layer.name, data, settings, scale, translate)
        if job["probabilities"] and prediction.probabilities is not None:
            put_probabilities(self.viewer, layer.name, prediction.probabilities, settings, scale, translate)
        self.last = _Result(layer.name, labels, prediction.probabilities, settings, job["source"])
        seconds = time.perf_counter() - job["started"]
        done = f"labels in {settings['store']}" if stored else _describe(prediction.labels, settings)
        self.status.value = f"{done} in {seconds:.1f} s ({settings.get('device', 'cpu')})"

    def _on_error(self, exc: BaseException) -> None:
        from ...inference.predict import Cancelled

        self._job["done"] = True
        if isinstance(exc, Cancelled):
            self.status.value = "cancelled; nothing was added"
            show_info("LiteNeXt: segmentation cancelled")
            return
        self.last_error = report_error("LiteNeXt Segment", exc)
        self.status.value = self.last_error

    def _on_finished(self) -> None:
        self.worker = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    # ------------------------------------------------------------------ re-applying post-processing

    def _reapplicable(self) -> bool:
        last = self.last
        # Lazy runs keep no probability map in memory: changing a setting needs a new run.
        if last is None or not isinstance(last.probabilities, np.ndarray) or last.labels not in self.viewer.layers:
            return False
        try:
            source = resolve_model_choice(self.settings.model.value, self.settings.model_file.value)
        except ValueError:
            return False
        return source == last.model_source and not self.running

    def _schedule_reapply(self, *_: Any) -> None:
        if self._reapplicable():
            self._reapply_timer.start(_REAPPLY_DELAY_MS)

    def _reapply(self) -> None:
        if not self._reapplicable():
            return
        if self.post_worker is not None:
            self._pending_reapply = True
            return
        from ...config import InferenceConfig
        from ...inference.postprocess import relabel

        values = {setting: getattr(self.settings, name).value for name, setting in REAPPLIED_FIELDS.items()}
        last = self.last
        self.post_worker = create_worker(relabel, last.probabilities, last.settings["axes"][:-2],
                                         InferenceConfig().with_overrides(**values), _start_thread=False,
                                         _ignore_errors=True)

        def done(labels: np.ndarray) -> None:
            if last.labels in self.viewer.layers:
                last.labels.data = labels
                last.settings.update(values)
                last.labels.metadata["litenext"] = dict(last.settings)
                self.status.value = f"re-applied: {_describe(labels, last.settings)}"

        def finished() -> None:
            self.post_worker = None
            if self._pending_reapply:
                self._pending_reapply = False
                self._reapply()

        self.post_worker.returned.connect(done)
        self.post_worker.errored.connect(lambda exc: report_error("LiteNeXt post-processing", exc))
        self.post_worker.finished.connect(finished)
        self.post_worker.start()


def _describe(labels: np.ndarray, settings: dict[str, Any]) -> str:
    if settings.get("instances"):
        return f"{int(labels.max(initial=0))} objects"  # ids are numbered 1..N
    return f"{100.0 * float(np.count_nonzero(labels)) / max(1, labels.size):.1f}% foreground"


def _segment_job(data: Any, source: str, device: str, kwargs: dict[str, Any], should_stop: Any):
    """Thread-worker generator: load the model, then ``predict.segment``; returns the Prediction."""
    from ...inference.predict import Progress, segment

    yield Progress("model", 0, 1, f"loading model {Path(source).name if '/' in source else source}")
    model = load_model_cached(source, device)
    name = model.card.name or Path(source).stem
    dev = next(model.parameters()).device
    yield Progress("model", 1, 1, f"segmenting with {name} on {dev}")
    prediction = yield from segment(data, model, should_stop=should_stop, **kwargs)
    return prediction
