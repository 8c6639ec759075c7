"""Lazy layers in the Segment widget: zarr-backed outputs, and "segment as I browse".

* ``lazy_output``: for a dask, zarr or multiscale layer, the ``LabelStore`` that ``segment``
  streams the labels into (a temporary one, or the store the user picked), so neither the image
  nor the labels are ever whole in memory.
* ``Browser``: while its box is ticked, the slice napari shows is segmented when the slider stops
  (``inference.browse.SliceSegmenter``, the whole stack's intensity range) and written into a
  zarr-backed Labels layer; slices already done are not redone until a setting changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer

from ._common import load_model_cached, report_error

__all__ = ["is_lazy_layer_data", "lazy_output", "open_for_painting", "Browser"]

_BROWSE_DELAY_MS = 150


def is_lazy_layer_data(data: Any, multiscale: bool) -> bool:
    """True for data that should not be held whole: dask, zarr and other lazy arrays, pyramids."""
    from ...inference.lazy import is_lazy

    return multiscale or is_lazy(data)


def lazy_output(image_name: str, picked: Path | str | None) -> Any:
    """A ``LabelStore`` for the labels: ``picked`` (a ``.zarr`` path) or a new temporary folder."""
    from ...io.ngff import LabelStore

    text = str(picked or "").strip()
    if text not in ("", "."):
        path = Path(text).expanduser()
        if path.suffix.lower() != ".zarr":
            path = path.with_name(path.name + ".zarr")
        return LabelStore(path, name=f"{image_name} labels", overwrite=True)
    folder = Path(tempfile.mkdtemp(prefix="litenext-labels-"))
    return LabelStore(folder / "labels.zarr", name=f"{image_name} labels")


def open_for_painting(store_path: str) -> Any:
    """The finished store's level-0 labels, writable, so that napari can paint on them."""
    import zarr

    return zarr.open_array(str(Path(store_path) / "0"), mode="r+")


class Browser:
    """Segment the shown slice of the widget's image when the slider moves (see the module docstring).

    Args:
        widget: the ``SegmentWidget`` (its viewer, image picker, settings and model choice).
    """

    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self.worker: Any = None
        self.done: set[int] = set()
        self.store: Any = None
        self._key: Any = None
        self._segmenter: Any = None
        self._timer = QTimer(widget)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._segment_shown)
        widget.viewer.dims.events.current_step.connect(self._schedule)

    @property
    def active(self) -> bool:
        return bool(self.widget.settings.browse.value)

    def toggle(self, *_: Any) -> None:
        """The box was ticked or cleared: start with the slice on show, or stop."""
        if self.active:
            self._schedule()
        else:
            self._timer.stop()

    def _schedule(self, *_: Any) -> None:
        if self.active:
            self._timer.start(_BROWSE_DELAY_MS)

    def _shown(self, layer: Any, stack_ndim: int) -> tuple[int, ...]:
        """The stack index of the slice napari shows for ``layer``."""
        point = layer.world_to_data(self.widget.viewer.dims.point)
        shape = layer.data.shape if not getattr(layer, "multiscale", False) else layer.data[0].shape
        return tuple(min(max(int(round(p)), 0), n - 1) for p, n in zip(point[:stack_ndim], shape[:stack_ndim]))

    def _segment_shown(self) -> None:
        from napari.qt.threading import create_worker

        from ...io.ngff import temporary_label_store
        from ._layers import full_resolution, layer_axes
        from ._common import resolve_model_choice

        w = self.widget
        layer = w.image.value
        if layer is None or self.worker is not None or w.running:
            if self.worker is not None:
                self._schedule()  # try again when the running slice is done
            return
        try:
            source = resolve_model_choice(w.settings.model.value, w.settings.model_file.value)
            data = full_resolution(layer.data, getattr(layer, "multiscale", False))
            axes = layer_axes(len(data.shape), layer.rgb)
        except ValueError as exc:
            w.status.value = f"segment as I browse: {exc}"
            return
        stack_ndim = len(axes) - 2 - ("C" in axes)
        if stack_ndim == 0:
            w.status.value = "segment as I browse: the image is 2D; press Segment"
            return
        index = self._shown(layer, stack_ndim)
        settings = w.model_values.overrides()
        device = str(w.settings.device.value)
        key = (id(layer), source, device, tuple(sorted(settings.items())))
        if key != self._key:  # another image, model or setting: start over
            self._key, self._segmenter, self.done = key, None, set()
            shape = tuple(data.shape[:stack_ndim]) + tuple(data.shape[stack_ndim:stack_ndim + 2])
            # int32 holds both instance ids and 0/1 masks, whatever the model's setting is
            self.store = temporary_label_store(shape, "int32", axes.replace("C", ""), name=f"{layer.name} labels")
            self._show_layer(layer, axes)
        flat = _flat(index, data.shape[:stack_ndim])
        if flat in self.done:
            return
        self.worker = create_worker(self._job, data, source, device, axes, settings, index, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.returned.connect(lambda _: self._finished_slice(flat))
        self.worker.errored.connect(lambda exc: report_error("LiteNeXt segment as I browse", exc))
        self.worker.finished.connect(self._worker_done)
        w.status.value = f"segmenting slice {index}..."
        self.worker.start()

    def _job(self, data: Any, source: str, device: str, axes: str, settings: dict, index: tuple[int, ...]) -> Any:
        from ...inference.browse import SliceSegmenter
        from ...progress import run_to_end

        if self._segmenter is None:
            model = load_model_cached(source, device)
            self._segmenter = SliceSegmenter(data, model, axes=axes, labels=self.store.labels, **settings)
        return run_to_end(self._segmenter.segment(index))

    def _finished_slice(self, flat: int) -> None:
        self.done.add(flat)
        layer = self._layer()
        if layer is not None:
            layer.refresh()
        self.widget.status.value = f"segmented {len(self.done)} slice(s) as shown"

    def _worker_done(self) -> None:
        self.worker = None

    def _layer(self) -> Any:
        name = f"{self.widget.image.value.name} labels" if self.widget.image.value is not None else None
        for layer in self.widget.viewer.layers:
            if layer.name == name and layer.metadata.get("litenext_browse"):
                return layer
        return None

    def _show_layer(self, image: Any, axes: str) -> None:
        from ._layers import output_geometry

        stack = "".join(a for a in axes if a not in "CYX")
        scale, translate = output_geometry(image.scale, image.translate, image.rgb, axes, stack + "YX")
        existing = self._layer()
        if existing is not None:
            existing.data = self.store.labels
            return
        self.widget.viewer.add_labels(self.store.labels, name=f"{image.name} labels", scale=scale,
                                      translate=translate, metadata={"litenext_browse": True})


def _flat(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, n in zip(index, shape):
        flat = flat * int(n) + int(i)
    return flat
