"""napari stays responsive while the Train widget trains: a 10 ms timer in the GUI thread fires on time.

The full measurement (idle reference, throughput against training without napari) is
benchmarks/bench_gui_latency.py; this is its quick form.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from _widgets_support import isolated_widget_state, skip_without_display, wait_idle  # noqa: F401 (fixture)

skip_without_display()
pytestmark = [pytest.mark.gui, pytest.mark.slow]

TICK_MS = 10


def test_event_loop_delay_while_training_stays_under_100_ms(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer(show=True)
    image, truth = viewer.open_sample("napari-litenext", "fluorescence")
    _, widget = viewer.window.add_plugin_dock_widget("napari-litenext", "Train")
    r = widget.recipe
    r.epochs.value, r.batch_size.value, r.patch_size.value, r.output_folder.value = 1000, 4, 64, tmp_path / "run"
    widget.validation.validation.value = "train"
    image_box, labels_box = widget.pair_rows()[0]
    image_box.value, labels_box.value = image, truth

    delays: list[float] = []
    last = [time.perf_counter()]
    steps: list[float] = []

    def tick() -> None:
        now = time.perf_counter()
        if steps:  # from the first training step on
            delays.append((now - last[0]) * 1000 - TICK_MS)
        last[0] = now

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    widget.start()

    def on_event(event) -> None:
        if event.kind == "step":
            steps.append(time.perf_counter())
            if len(steps) >= 15:
                widget.stop()

    widget.worker.yielded.connect(on_event)
    wait_idle(qtbot, widget, timeout=300_000)
    timer.stop()
    assert widget.result is not None and widget.result.stopped
    assert len(delays) > 50
    p99 = float(np.percentile(delays, 99))
    assert p99 < 100, f"GUI event loop delayed by up to {p99:.0f} ms (p99) while training; max {max(delays):.0f} ms"
