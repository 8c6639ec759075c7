"""A small matplotlib canvas for the live training curves in the Train widget.

Epoch rows are drawn by ``curves.draw_history`` (the same picture as the CLI's curves.png); the
loss of every step is added as a faint line so that the plot moves during long epochs. Redraws are
coalesced (at most one per ``min_interval_ms``) because a matplotlib draw costs tens of
milliseconds of the GUI thread.
"""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

__all__ = ["CurvePlot"]


class CurvePlot(QWidget):
    """Training loss and validation Dice against epoch, redrawn at most every ``min_interval_ms``."""

    def __init__(self, parent: QWidget | None = None, min_interval_ms: int = 500) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.4), dpi=90, facecolor="white")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(180)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.history: list[dict[str, Any]] = []
        self.steps: list[tuple[float, float]] = []  # (fractional epoch, loss)
        self.draws = 0
        self._min_interval = min_interval_ms / 1000.0
        self._last_draw = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.redraw)
        self.redraw()

    def clear(self) -> None:
        """Forget the curves of a previous run."""
        self.history, self.steps = [], []
        self.redraw()

    def add_step(self, epoch_position: float, loss: float) -> None:
        """Record the loss of one optimiser step at ``epoch_position`` (e.g. 2.5 = half of epoch 3)."""
        self.steps.append((epoch_position, loss))
        self.schedule()

    def add_epoch(self, row: dict[str, Any]) -> None:
        """Record one epoch (``epoch``, ``loss``, ``val_dice``) and redraw soon."""
        self.history.append(dict(row))
        self.schedule()

    def schedule(self) -> None:
        """Redraw now if the last draw is old enough, else once when it is."""
        if self._timer.isActive():
            return
        wait = self._min_interval - (time.perf_counter() - self._last_draw)
        self._timer.start(max(0, int(wait * 1000)))

    def redraw(self) -> None:
        """Draw the curves now."""
        from ..curves import draw_history

        self._last_draw = time.perf_counter()
        self.draws += 1
        history = self.history
        if not history and self.steps:
            # Before the first epoch ends: draw the step losses alone on draw_history's axes.
            history = [{"epoch": self.steps[-1][0], "loss": self.steps[-1][1], "val_dice": None}]
        if history:
            draw_history(self.figure, history)
            if self.steps:
                ax = self.figure.axes[0]
                xs, ys = zip(*self.steps)
                ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=0.8, zorder=0)
                ax.set_xlim(0, max(1.0, max(xs), self.history[-1]["epoch"] if self.history else 0))
        else:
            self.figure.clear()
            ax = self.figure.add_subplot(111)
            ax.text(0.5, 0.5, "training curves appear here", ha="center", va="center", color="gray",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        self.canvas.draw_idle()
