"""Plots of training curves (loss and validation Dice per epoch) as PNG files.

Uses matplotlib's object API with the Agg canvas, never pyplot, so it neither changes a global
backend nor opens windows, which matters inside napari.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["draw_history", "plot_history"]


def draw_history(figure, history: Sequence[dict[str, Any]]) -> None:
    """Draw loss (left axis) and validation Dice (right axis) against epoch on ``figure``."""
    figure.clear()
    ax = figure.add_subplot(111)
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["loss"] for row in history], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    val = [(row["epoch"], row["val_dice"]) for row in history if row.get("val_dice") not in (None, "")]
    ax2 = ax.twinx()
    if val:
        ax2.plot(*zip(*val), color="tab:orange", marker="o", markersize=2.5, label="validation Dice")
    ax2.set_ylabel("validation Dice", color="tab:orange")
    ax2.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    figure.tight_layout()


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Write the curves of ``history`` (rows with epoch, loss, val_dice) to a PNG at ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.files import atomic_write

    figure = Figure(figsize=(6, 3.6), dpi=120)
    FigureCanvasAgg(figure)
    draw_history(figure, history)
    if title:
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
