"""The Segment widget's folder source: every image of a folder into an output folder, as the CLI does.

The batch is ``inference.batch.predict_files``, the generator behind ``napari-litenext predict``,
run in a thread worker: the same model, the same settings (the model's, except those the user
changed in the form) and the same output options give the same files, each output set whole or
not at all. Cancel stops before the next file or batch of tiles; the file in progress writes nothing.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

__all__ = ["FolderSource", "SOURCES", "EXISTING"]

#: The widget's sources: an Image layer, or the image files of a folder.
SOURCES = ("layer", "folder")
#: What the folder source does with outputs that exist: choice -> (overwrite, skip_existing).
EXISTING = {"refuse": (False, False), "keep complete": (False, True), "overwrite": (True, False)}
# fields of the Segment widget that only the layer source uses
_LAYER_ONLY = ("image", "channel_axis", "channel")
_LAYER_ONLY_SETTINGS = ("probabilities", "browse", "labels_store")


class FolderSource:
    """The source choice and the folder fields of a Segment widget, and the folder batch they run.

    Args:
        widget: the Segment widget; its model fields, device, status line, Cancel and ``worker`` are shared.
    """

    def __init__(self, widget: Any) -> None:
        from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit

        self.widget = widget
        self.source = ComboBox(label="source", choices=list(SOURCES), value="layer",
                               tooltip="an Image layer, or every image file of a folder (as napari-litenext predict)")
        self.input_folder = FileEdit(label="input folder", mode="d", tooltip="the image files to segment")
        self.output_folder = FileEdit(label="output folder", mode="d",
                                      tooltip="<name>_labels.tif per image (created); nothing is replaced unless "
                                              "'existing outputs' says overwrite")
        self.probabilities = CheckBox(label="probability files", tooltip="also write <name>_prob.tif (float32)")
        self.overlay = CheckBox(label="overlay files",
                                tooltip="also write <name>_overlay.png (labels drawn on the image; 2D images only)")
        self.existing = ComboBox(label="existing outputs", choices=list(EXISTING), value="refuse",
                                 tooltip="refuse: stop if an output exists; keep complete: finish an interrupted "
                                         "batch; overwrite: replace them")
        self.fields = Container(widgets=[self.input_folder, self.output_folder, self.probabilities, self.overlay,
                                         self.existing])
        self.container = Container(widgets=[self.source, self.fields])
        self.result: Any = None  #: the last batch's ``BatchResult``
        self._hidden: dict[str, bool] = {}
        self.source.changed.connect(self._on_source)
        self._on_source()

    @property
    def active(self) -> bool:
        """The folder source is chosen."""
        return self.source.value == "folder"

    def _on_source(self, *_: Any) -> None:
        folder = self.active
        self.fields.visible = folder
        w = self.widget
        layer_fields = [getattr(w, n) for n in _LAYER_ONLY] + [getattr(w.settings, n) for n in _LAYER_ONLY_SETTINGS
                                                               if hasattr(w.settings, n)]
        if folder:
            self._hidden = {id(f): f.visible for f in layer_fields}
            for f in layer_fields:
                f.visible = False
        elif self._hidden:
            for f in layer_fields:
                f.visible = self._hidden.get(id(f), True)
            self._hidden = {}

    def run(self) -> None:
        """Segment every image of the input folder into the output folder in a thread worker."""
        from napari.utils import cancelable_progress

        from ...inference.batch import predict_files
        from ...io.images import ImageReadError, list_images
        from ._common import load_model_cached, resolve_model_choice, start_run

        w = self.widget
        inputs, outdir = _folder(self.input_folder.value), _folder(self.output_folder.value)
        if inputs is None or outdir is None:
            w._fail("choose an input folder and an output folder")
            return
        try:
            source = resolve_model_choice(w.settings.model.value, w.settings.model_file.value)
            files = list_images([inputs])
        except (ValueError, ImageReadError) as exc:
            w._fail(str(exc))
            return
        overwrite, skip_existing = EXISTING[self.existing.value]
        w._stop, should_stop = w._runs.new_run()
        w.last_error = None
        self.result = None
        w._job = {"started": time.perf_counter(), "outdir": outdir, "failed": []}
        loader = functools.partial(load_model_cached, source, str(w.settings.device.value))
        job = predict_files(files, outdir, loader, options=w.model_values.overrides(), model_source=source,
                            overwrite=overwrite, skip_existing=skip_existing, probabilities=bool(self.probabilities.value),
                            overlay=bool(self.overlay.value), should_stop=should_stop)
        w._progress = cancelable_progress(total=len(files), desc="LiteNeXt: images", cancel_callback=w.cancel)
        w.worker = start_run(_batch_job, job, on_event=self._on_progress, on_result=self._on_result,
                             on_error=w._on_error, on_finished=w._on_finished, run_button=w.run_button,
                             stop_button=w.cancel_button, status=w.status,
                             message=f"segmenting {len(files)} image(s) of {inputs.name}...")

    def _on_progress(self, event: Any) -> None:
        from napari.utils.notifications import show_info

        w = self.widget
        bar = w._progress
        if bar is None or w._job.get("done"):
            return
        if event.stage in ("tidy", "note"):
            show_info(f"LiteNeXt: {event.message}")
            return
        where = f"image {event.index} of {event.count}: " if event.index else ""
        w.status.value = f"{where}{event.message}"  # first: the bar's update may run _on_result
        if event.stage == "images":
            if event.outcome == "failed":
                w._job["failed"].append(event.message)
            bar.update(event.done - bar.n)

    def _on_result(self, result: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        w = self.widget
        job = w._job
        job["done"] = True
        self.result = result
        seconds = time.perf_counter() - job["started"]
        counts = (f"{len(result.written)} written, {len(result.skipped)} skipped, {len(result.failed)} failed "
                  f"into {job['outdir']}")
        if result.cancelled:
            w.status.value = f"cancelled: {counts}; the image in progress wrote nothing"
            show_info("LiteNeXt: folder batch cancelled")
            return
        w.status.value = f"{counts} in {seconds:.1f} s"
        if result.failed:
            w.last_error = "; ".join(text for _, text in result.failed)
            show_error(f"LiteNeXt Segment: {len(result.failed)} image(s) failed: {w.last_error}")


def _batch_job(job: Any) -> Any:
    """Thread-worker generator: ``predict_files``' events; returns its ``BatchResult``."""
    return (yield from job)


def _folder(value: Any) -> Path | None:
    """The folder a FileEdit holds, or None when nothing was chosen."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()
