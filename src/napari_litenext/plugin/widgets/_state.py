"""Models trained in this napari session, shared by the Train and Segment widgets.

Only paths and scores are kept (never a viewer, a layer or a network), so holding this registry for
the life of the process keeps nothing else alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from psygnal import Signal

__all__ = ["SessionModel", "SessionModels", "session_models"]


@dataclass(frozen=True)
class SessionModel:
    """A checkpoint written by the Train widget.

    Attributes:
        name: model name given in the Train widget.
        path: its best.pt.
        val_dice: best validation Dice, or None if unknown.
        created: ``time.time()`` when it was registered.
    """

    name: str
    path: Path
    val_dice: float | None = None
    created: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        """How model pickers show it, e.g. ``"nuclei-run (this session, Dice 0.812)"``."""
        score = f", Dice {self.val_dice:.3f}" if self.val_dice is not None else ""
        return f"{self.name} (this session{score})"


class SessionModels:
    """An ordered registry of the models trained in this session; ``changed`` fires on every change."""

    changed = Signal()

    def __init__(self) -> None:
        self._models: list[SessionModel] = []

    def add(self, name: str, path: str | Path, val_dice: float | None = None) -> SessionModel:
        """Register a checkpoint (replacing an entry with the same path) and return its record."""
        path = Path(path).resolve()
        model = SessionModel(name, path, val_dice)
        self._models = [m for m in self._models if m.path != path] + [model]
        self.changed.emit()
        return model

    def clear(self) -> None:
        """Forget every model (tests; the files stay on disk)."""
        self._models.clear()
        self.changed.emit()

    def __iter__(self):
        return iter(list(self._models))

    def __len__(self) -> int:
        return len(self._models)

    def latest(self) -> SessionModel | None:
        """The most recently registered model, or None."""
        return self._models[-1] if self._models else None


#: The registry of this process.
session_models = SessionModels()
