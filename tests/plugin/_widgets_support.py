"""Shared pieces of the widget tests (imported by tests/plugin/test_widgets_*.py).

The GUI tests need a display: ``scripts/test.sh`` runs pytest under Xvfb. Without a display (and
without ``QT_QPA_PLATFORM=offscreen``) the modules skip instead of letting Qt abort the process.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest


def has_display() -> bool:
    """A Qt platform that can open windows is available."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def skip_without_display() -> None:
    """Skip the calling test module when no display is available (call at module level)."""
    if not has_display():
        pytest.skip("GUI tests need a display: run them with scripts/test.sh (Xvfb) or xvfb-run -a pytest",
                    allow_module_level=True)
    pytest.importorskip("qtpy", reason="GUI tests need a Qt binding (pip install 'napari[pyqt6]')")


@pytest.fixture(autouse=True)
def isolated_widget_state(tmp_path, monkeypatch):
    """Keep magicgui's persisted settings, default run folders, session models and caches per test."""
    import magicgui._util

    from napari_litenext.plugin.widgets import _common, _state

    cache = tmp_path / "magicgui-cache"
    monkeypatch.setattr(magicgui._util, "user_cache_dir", lambda *a, **k: cache)
    try:
        from napari_litenext.plugin.widgets import _train_form as train_form

        monkeypatch.setattr(train_form, "OUTPUT_ROOT", tmp_path / "litenext-models")
    except ImportError:  # pragma: no cover - Qt missing; the module skips anyway
        pass
    _state.session_models.clear()
    _common.clear_model_cache()
    yield
    _state.session_models.clear()
    _common.clear_model_cache()


def notifications():
    """napari's notification records so far (severity, message)."""
    from napari.utils.notifications import notification_manager

    return [(str(n.severity), n.message) for n in notification_manager.records]


def errors_since(count: int) -> list[str]:
    """Error notification messages after the first ``count`` records."""
    return [m for s, m in notifications()[count:] if s == "error"]


def wait_idle(qtbot, widget, attr: str = "worker", timeout: int = 120_000) -> None:
    """Wait until ``widget.<attr>`` is None (its thread worker finished)."""
    qtbot.waitUntil(lambda: getattr(widget, attr) is None, timeout=timeout)


def labels_like(shape, boxes) -> np.ndarray:
    """An int32 label image with ids 1.. in the given (y0, y1, x0, x1) boxes."""
    out = np.zeros(shape, np.int32)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        out[..., y0:y1, x0:x1] = i
    return out


PLUGIN = "napari-litenext"


def open_widget(viewer, name: str):
    """Open one of the plugin's widgets from its menu entry, as a user would; returns the widget."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget
