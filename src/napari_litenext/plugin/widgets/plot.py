"""The live training plot of the Train widget, painted with QPainter.

Training loss (per step, faint; per epoch, solid; left axis) and validation Dice (per epoch;
right axis, 0 to 1) against epoch. It is painted directly rather than with matplotlib because a
matplotlib redraw of two twin axes costs 60-250 ms of the GUI thread (measured on two loaded CPU
cores), which made napari stutter while training; painting a few polylines costs about a
millisecond. The same curves are written as curves.png (``curves.plot_history``) at the end of a
run. Repaints are coalesced to at most one per ``min_interval_ms``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["CurvePlot", "nice_ticks"]

LOSS_COLOUR = QColor(31, 119, 180)  # matplotlib's tab:blue, as in curves.png
DICE_COLOUR = QColor(255, 127, 14)  # tab:orange


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"


class CurvePlot(QWidget):
    """Loss and validation Dice against epoch, repainted at most every ``min_interval_ms``."""

    def __init__(self, parent: QWidget | None = None, min_interval_ms: int = 250) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(170)
        self.setMaximumHeight(220)
        self.setMinimumWidth(200)
        self.history: list[dict[str, Any]] = []
        self.steps: list[tuple[float, float]] = []  # (fractional epoch, loss)
        self.draws = 0
        self.paint_ms: list[float] = []
        self._min_interval = min_interval_ms / 1000.0
        self._last_draw = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.redraw)

    # ------------------------------------------------------------------ data

    def clear(self) -> None:
        """Forget the curves of a previous run."""
        self.history, self.steps = [], []
        self.redraw()

    def add_step(self, epoch_position: float, loss: float) -> None:
        """Record the loss of one optimiser step at ``epoch_position`` (e.g. 2.5 = half of epoch 3)."""
        if loss is not None and math.isfinite(loss):
            self.steps.append((float(epoch_position), float(loss)))
            self.schedule()

    def add_epoch(self, row: dict[str, Any]) -> None:
        """Record one epoch (``epoch``, ``loss``, ``val_dice``) and repaint soon."""
        self.history.append(dict(row))
        self.schedule()

    def schedule(self) -> None:
        """Repaint now if the last repaint is old enough, else once when it is."""
        if self._timer.isActive():
            return
        wait = self._min_interval - (time.perf_counter() - self._last_draw)
        self._timer.start(max(0, int(wait * 1000)))

    def redraw(self) -> None:
        """Ask Qt to repaint (Qt merges requests; painting happens when the widget is visible)."""
        self._last_draw = time.perf_counter()
        self.draws += 1
        self.update()

    # ------------------------------------------------------------------ painting

    def _series(self, width: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]],
                                           list[tuple[float, float]]]:
        steps = self.steps
        if len(steps) > 2 * width > 0:  # at most two points per pixel column: mean per bucket
            per = len(steps) / (2 * width)
            buckets: list[tuple[float, float]] = []
            for i in range(2 * width):
                chunk = steps[int(i * per):max(int(i * per) + 1, int((i + 1) * per))]
                buckets.append((sum(c[0] for c in chunk) / len(chunk), sum(c[1] for c in chunk) / len(chunk)))
            steps = buckets
        epoch_loss = [(float(r["epoch"]), float(r["loss"])) for r in self.history
                      if r.get("loss") is not None and math.isfinite(float(r["loss"]))]
        dice = [(float(r["epoch"]), float(r["val_dice"])) for r in self.history if r.get("val_dice") not in (None, "")]
        return steps, epoch_loss, dice

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        start = time.perf_counter()
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()
            self.paint_ms.append((time.perf_counter() - start) * 1000)

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        palette = self.palette()
        text = palette.color(palette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(40)
        metrics = p.fontMetrics()
        left, right, top, bottom = 44, 40, 18, metrics.height() + 8
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        p.fillRect(self.rect(), palette.color(palette.ColorRole.Base))
        steps, epoch_loss, dice = self._series(int(area.width()))
        if not steps and not epoch_loss:
            p.setPen(text)
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "training curves appear here")
            return
        xs = [x for x, _ in steps + epoch_loss + dice]
        x_max = max(1.0, max(xs))
        losses = [y for _, y in steps + epoch_loss]
        y_lo, y_hi = min(losses), max(losses)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        pad = 0.05 * (y_hi - y_lo)
        y_lo, y_hi = y_lo - pad, y_hi + pad

        def to_px(x: float, y: float, lo: float, hi: float) -> QPointF:
            return QPointF(area.left() + x / x_max * area.width(), area.bottom() - (y - lo) / (hi - lo) * area.height())

        # grid, ticks and labels
        p.setPen(QPen(grid, 1))
        p.drawRect(area)
        p.setPen(text)
        for x in nice_ticks(0.0, x_max, 5):
            px = to_px(x, y_lo, y_lo, y_hi).x()
            p.setPen(QPen(grid, 1))
            p.drawLine(QPointF(px, area.top()), QPointF(px, area.bottom()))
            p.setPen(text)
            if x > 0:  # "epoch" stands where 0 would
                p.drawText(QRectF(px - 30, area.bottom() + 2, 60, metrics.height()), Qt.AlignmentFlag.AlignHCenter,
                           _label(x))
        p.drawText(QRectF(4, area.bottom() + 2, left + 40, metrics.height()), Qt.AlignmentFlag.AlignLeft, "epoch")
        for y in nice_ticks(y_lo, y_hi, 4):
            py = to_px(0, y, y_lo, y_hi).y()
            p.setPen(LOSS_COLOUR)
            p.drawText(QRectF(0, py - metrics.height() / 2, left - 4, metrics.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _label(y))
        for y in (0.0, 0.5, 1.0):
            py = to_px(0, y, 0.0, 1.0).y()
            p.setPen(DICE_COLOUR)
            p.drawText(QRectF(area.right() + 4, py - metrics.height() / 2, right - 4, metrics.height()),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, _label(y))

        # curves
        def polyline(points: list[tuple[float, float]], lo: float, hi: float, pen: QPen, dots: bool) -> None:
            if not points:
                return
            path = QPainterPath(to_px(*points[0], lo, hi))
            for x, y in points[1:]:
                path.lineTo(to_px(x, y, lo, hi))
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            if dots and len(points) <= area.width() / 4:
                p.setBrush(pen.color())
                for x, y in points:
                    p.drawEllipse(to_px(x, y, lo, hi), 2.0, 2.0)

        faint = QColor(LOSS_COLOUR)
        faint.setAlpha(90)
        polyline(steps, y_lo, y_hi, QPen(faint, 1), False)
        polyline(epoch_loss, y_lo, y_hi, QPen(LOSS_COLOUR, 2), True)
        polyline(dice, 0.0, 1.0, QPen(DICE_COLOUR, 2), True)

        # legend
        p.setPen(LOSS_COLOUR)
        p.drawText(QRectF(left, 0, area.width() / 2, top), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   "training loss")
        best = max((d for _, d in dice), default=None)
        p.setPen(DICE_COLOUR)
        p.drawText(QRectF(left + area.width() / 2, 0, area.width() / 2, top),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   "validation Dice" + (f" (best {best:.3f})" if best is not None else ""))
