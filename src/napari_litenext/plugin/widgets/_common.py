"""Pieces the three widgets share: model and device choices, layer pickers, messages, model cache."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from magicgui.widgets import ComboBox, Label
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject

__all__ = ["status_label", "FILE_CHOICE", "SCRATCH_CHOICE", "DEVICES", "model_choices", "resolve_model_choice",
           "error_text", "report_error", "LayerChoices", "load_model_cached", "clear_model_cache", "RunStopper",
           "ModelValues", "start_run"]

#: Model picker entry that shows a file field.
FILE_CHOICE = "<file>"
#: "Start from" entry of the Train widget for random initial weights.
SCRATCH_CHOICE = "<scratch>"
#: Device choices; "auto" picks CUDA, then MPS, then the CPU (checked when a run starts).
DEVICES = ("auto", "cpu", "cuda", "mps")


def status_label(lines: int = 2) -> Label:
    """A word-wrapped status line that takes the full width and room for ``lines`` lines.

    The fixed room keeps status updates from re-laying-out the dock at every change.
    """
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    native = label.native
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
    native.setMinimumHeight(lines * native.fontMetrics().lineSpacing() + 4)
    return label


def model_choices(scratch: bool = False) -> list[tuple[str, str]]:
    """(label, value) pairs for a model picker: bundled models, this session's models, a file.

    Values are a bundled model's name, a session model's checkpoint path, ``FILE_CHOICE`` or
    (with ``scratch``) ``SCRATCH_CHOICE``. Listing reads only the models folder, never torch.
    """
    from ...network.registry import bundled_models
    from ._state import session_models

    out: list[tuple[str, str]] = [("random weights (from scratch)", SCRATCH_CHOICE)] if scratch else []
    out += [(f"{name} (bundled)", name) for name in bundled_models()]
    out += [(m.label, str(m.path)) for m in reversed(list(session_models))]
    out.append(("Choose file...", FILE_CHOICE))
    return out


def resolve_model_choice(choice: str | None, file: Any) -> str:
    """The model source (bundled name or checkpoint path) that a picker and its file field select.

    Raises:
        ValueError: nothing usable is chosen; the message says what to do.
    """
    if choice == FILE_CHOICE or choice is None:
        text = str(file or "").strip()
        if not text or text == "." or not Path(text).expanduser().is_file():
            shown = f" ({text} is not a file)" if text and text != "." else ""
            raise ValueError(f"choose a model checkpoint (.pt) file{shown}, or pick a bundled model or one "
                             "trained in this session")
        return str(Path(text).expanduser())
    return str(choice)


def error_text(exc: BaseException) -> str:
    """One line for a notification: the message of expected errors, the type too for others."""
    from ...errors import LiteNeXtError

    text = (str(exc).strip().splitlines() or [""])[0]
    # ValueError and the file errors: magicgui/napari's own messages for bad form values and paths.
    if isinstance(exc, (LiteNeXtError, ValueError, FileNotFoundError, FileExistsError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def report_error(prefix: str, exc: BaseException) -> str:
    """Show ``prefix: message`` as a napari error notification and return it."""
    message = f"{prefix}: {error_text(exc)}"
    show_error(message)
    return message


class LayerChoices:
    """Keeps magicgui ComboBoxes of layers in step with a viewer's layer list.

    napari refreshes docked widgets itself; this also covers widgets that are not docked (scripts,
    tests) and layers renamed in place.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.combos: list[ComboBox] = []
        events = viewer.layers.events
        for name in ("inserted", "removed", "reordered", "renamed"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.connect(self.reset)

    def combo(self, layer_type: type, label: str, nullable: bool = False, tooltip: str = "") -> ComboBox:
        """A ComboBox listing the viewer's layers of ``layer_type`` (topmost first)."""
        viewer = self.viewer

        def choices(_widget: Any) -> list[tuple[str, Any]]:
            return [(layer.name, layer) for layer in reversed(list(viewer.layers)) if isinstance(layer, layer_type)]

        box = ComboBox(label=label, choices=choices, nullable=nullable, tooltip=tooltip)
        self.combos.append(box)
        return box

    def forget(self, box: ComboBox) -> None:
        """Stop refreshing ``box`` (it is being removed)."""
        if box in self.combos:
            self.combos.remove(box)

    def reset(self, *_: Any) -> None:
        """Re-read the layer list into every ComboBox, keeping each current choice if it still exists."""
        for box in list(self.combos):
            try:
                box.reset_choices()
            except RuntimeError:  # its Qt widget was deleted
                self.combos.remove(box)

    def disconnect(self) -> None:
        """Stop listening to the viewer."""
        events = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered", "renamed"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.disconnect(self.reset)


# A few loaded networks, so that re-running the Segment widget does not reload from disk.
_MODEL_CACHE: dict[tuple[str, str, float], Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 3


def load_model_cached(source: str, device: str | None) -> Any:
    """``registry.load_model(source, device)``, cached by source, device and file time (thread-safe)."""
    from ...network.registry import load_model, resolve_source

    try:
        stamp = resolve_source(source).stat().st_mtime
    except (OSError, ValueError):  # reported when the model is loaded
        stamp = -1.0
    key = (str(source), str(device or "auto"), stamp)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
    if model is not None:
        return model
    model = load_model(source, device=device)
    with _CACHE_LOCK:
        _MODEL_CACHE[key] = model
        while len(_MODEL_CACHE) > _CACHE_SIZE:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
    return model


def clear_model_cache() -> None:
    """Forget the cached networks."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


class RunStopper(QObject):
    """Stop events for a widget's runs, ended when the widget's dock is closed or it is deleted.

    napari closes a dock by taking the widget out of it (parent None) without deleting it, and Qt
    may delete it later. ``on_close`` (the widget's Stop or Cancel) runs when the widget is closed
    or leaves its parent; on deletion the widget's methods can no longer be called, so the current
    run's stop event is set directly.

    Args:
        widget: the widget whose runs are stopped; it becomes this object's parent.
        on_close: called on close and when the widget is taken out of its dock.
    """

    def __init__(self, widget: Any, on_close: Callable[[], None]) -> None:
        super().__init__(widget)
        self._on_close = on_close
        current: dict[str, threading.Event | None] = {"event": None}
        self._current = current
        # The closure holds the dict, not self or the widget: both are gone when this runs.
        widget.destroyed.connect(lambda *_: current["event"] is not None and current["event"].set())
        widget.installEventFilter(self)

    def new_run(self) -> tuple[threading.Event, Callable[[], bool]]:
        """A fresh stop event for the run that starts, and the ``should_stop`` callable the cores poll."""
        event = threading.Event()
        self._current["event"] = event
        return event, event.is_set

    def stop_current(self, button: Any, status: Any, message: str) -> None:
        """Ask the current run to stop: set its event, disable ``button`` (Stop/Cancel), show ``message``."""
        event = self._current["event"]
        if event is not None:
            event.set()
        button.enabled = False
        status.value = message

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        kind = event.type()
        if kind == QEvent.Type.Close or (kind == QEvent.Type.ParentChange and watched.parent() is None):
            self._on_close()
        return False  # the widget still handles the event


class ModelValues:
    """Form fields that show a model's stored settings until the user changes them.

    Settings have one owner, the model (``InferenceConfig``): a form shows the chosen model's values
    (read in a thread worker, since reading a checkpoint imports torch) and hands the core only the
    fields the user changed since, so the widget gives the labels the CLI and the API give.

    Args:
        form: a magicgui container.
        fields: form field name -> ``InferenceConfig`` setting name.
        shown: form field name -> how that field shows a stored value (e.g. a text field showing
            an object size of 0 as "off"); other fields show the value as it is.
    """

    def __init__(self, form: Any, fields: dict[str, str],
                 shown: dict[str, Callable[[Any], Any]] | None = None) -> None:
        self.form, self.fields, self.shown = form, fields, dict(shown or {})
        self.changed_by_user: set[str] = set()
        self.source: str | None = None
        self._showing = False
        self._worker: Any = None
        for name in fields:
            getattr(form, name).changed.connect(lambda *_, name=name: self._touched(name))

    def _touched(self, name: str) -> None:
        if not self._showing:
            self.changed_by_user.add(name)

    def show(self, values: dict[str, Any], source: str | None = None) -> None:
        """Put ``values`` (setting name -> value) in the form; nothing counts as changed after this."""
        self._showing = True
        try:
            for name, setting in self.fields.items():
                if setting in values:
                    value = values[setting]
                    getattr(self.form, name).value = self.shown[name](value) if name in self.shown else value
        finally:
            self._showing = False
        self.changed_by_user.clear()
        self.source = source

    def load(self, source: str) -> None:
        """Show the settings stored in model ``source`` once a thread worker has read them."""
        from napari.qt.threading import create_worker

        from ...network.registry import model_settings

        def shown(inference: Any) -> None:
            if self._worker is not worker:
                return  # another model was chosen meanwhile
            try:
                self.show(inference.to_dict(), source)
            except RuntimeError:  # the form was deleted (dock closed) while the file was read
                pass

        worker = create_worker(model_settings, source, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(shown)
        self._worker = worker
        worker.start()

    @property
    def loading(self) -> bool:
        """A model's settings are being read."""
        return self._worker is not None and self._worker.is_running

    def overrides(self) -> dict[str, Any]:
        """The settings the user changed, as ``InferenceConfig`` names (the rest: the model's)."""
        return {self.fields[name]: getattr(self.form, name).value for name in sorted(self.changed_by_user)}


def start_run(job: Callable[..., Any], *args: Any, on_event: Callable[[Any], None], on_result: Callable[[Any], None],
              on_error: Callable[[BaseException], None], on_finished: Callable[[], None], run_button: Any,
              stop_button: Any, status: Any, message: str) -> Any:
    """Start a widget's long job (a generator) in a napari thread worker and return the worker.

    Connects the job's events, result, error and end to the widget, disables its run button and
    enables its stop/cancel button while it runs, and shows ``message`` in its status line.
    """
    from napari.qt.threading import create_worker

    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(on_event)
    worker.returned.connect(on_result)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    run_button.enabled = False
    stop_button.enabled = True
    status.value = message
    worker.start()
    return worker
