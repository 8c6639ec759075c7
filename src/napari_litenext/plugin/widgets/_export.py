"""Exporting a model from a widget: a file dialog, then the export in a thread worker.

The format follows the file name the user gives: ``.zip`` is a BioImage Model Zoo package
(``exchange.export_bioimageio``), ``.onnx`` an ONNX file (``exchange.export_onnx``). The widget's
``export_model(path)`` does the work without a dialog (scripts, tests); the button asks first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["EXPORT_FILTER", "ask_export_path", "export_job", "export_from"]

EXPORT_FILTER = "BioImage Model Zoo package (*.zip);;ONNX (*.onnx)"


def ask_export_path(parent: Any, name: str) -> Path | None:
    """A save dialog for the exported model; None when the user cancels."""
    from qtpy.QtWidgets import QFileDialog

    start = str(Path.home() / f"{name or 'model'}.zip")
    path, _ = QFileDialog.getSaveFileName(parent, "Export model", start, EXPORT_FILTER)
    return Path(path) if path else None


def export_job(source: Any, path: Path) -> Path:
    """Export ``source`` (a bundled name, checkpoint path or model) to ``path`` in the format its suffix names.

    Raises:
        SettingsError: the file name ends neither in .zip nor in .onnx.
        FileExistsError: ``path`` exists (the dialog has asked the user to confirm; export writes atomically).
    """
    from ...errors import SettingsError

    suffix = path.suffix.lower()
    if suffix == ".zip":
        from ...exchange import export_bioimageio

        return export_bioimageio(source, path, overwrite=True)
    if suffix == ".onnx":
        from ...exchange import export_onnx

        return export_onnx(source, path, overwrite=True)
    raise SettingsError(f"cannot tell the export format of {path.name}: name the file .zip (BioImage Model Zoo) "
                        "or .onnx (ONNX)")


def export_from(widget: Any, source: Any, path: str | Path, button: Any) -> Any:
    """Export ``source`` to ``path`` in a thread worker for ``widget`` (Segment or Train).

    The widget's ``status`` line and a notification say where the model went or what failed
    (``widget.last_error``); ``button`` is disabled meanwhile; ``widget.export_worker`` is the
    worker until it finishes.
    """
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_info

    from ._common import report_error

    path = Path(path)
    button.enabled = False
    widget.status.value = f"exporting {Path(str(source)).name} to {path.name}..."

    def done(written: Path) -> None:
        widget.status.value = f"exported to {written}"
        show_info(f"LiteNeXt: model exported to {written}")

    def failed(exc: BaseException) -> None:
        widget.last_error = report_error("LiteNeXt export", exc)
        widget.status.value = widget.last_error

    def finished() -> None:
        widget.export_worker = None
        button.enabled = True

    worker = create_worker(export_job, source, path, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(done)
    worker.errored.connect(failed)
    worker.finished.connect(finished)
    widget.export_worker = worker
    worker.start()
    return worker
