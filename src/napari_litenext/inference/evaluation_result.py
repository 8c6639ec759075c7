"""The result of an evaluation (``inference.evaluate``): scores, settings, notes; JSON and a table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EvaluationResult"]


@dataclass
class EvaluationResult:
    """Scores of one evaluation.

    Attributes:
        rows: one dict per scored image: ``name`` and, when read from files, ``image`` and
            ``mask`` paths, then ``dice``, ``iou``, ``precision``, ``recall`` and, for object
            scores, ``f1_50``, ``precision_50``, ``recall_50``, ``aji``, ``n_pred``, ``n_gt``.
        means: ``n_images`` (scored) and the mean of every score over ``rows``.
        skipped: names of images left out (paper protocol: empty ground truth).
        settings: protocol, instances, threshold, min_size, adaptive, object_size (the value
            used, or why it was not applied), model name and SHA-256 where known.
        notes: things the user should know, e.g. that binary masks were labelled.
        unusable: pairs left out with ``skip_bad``: one dict each with ``name``, ``file`` (the
            file at fault) and ``reason`` (a message naming it).
    """

    rows: list[dict[str, Any]]
    means: dict[str, float]
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unusable: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible: the means at the top level, then settings, notes and ``per_image``."""
        return {**self.means, "n_skipped": len(self.skipped), "skipped": list(self.skipped),
                "n_unusable": len(self.unusable), "unusable": [dict(u) for u in self.unusable],
                **self.settings, "notes": list(self.notes), "per_image": [dict(r) for r in self.rows]}

    def write_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``to_dict()`` to ``path`` atomically.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        from ..io.files import atomic_write

        text = json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)

    def table(self) -> str:
        """A short plain-text summary: counts, then one line per mean score."""
        n = self.means.get("n_images", 0)
        head = f"{n} image{'s' if n != 1 else ''} scored"
        if self.settings.get("protocol"):
            head += f" ({self.settings['protocol']} protocol)"
        if self.skipped:
            head += f", {len(self.skipped)} skipped (empty ground truth)"
        if self.unusable:
            head += f", {len(self.unusable)} unusable pair{'s' if len(self.unusable) != 1 else ''} left out"
        lines = [head]
        width = max((len(k) for k in self.means if k != "n_images"), default=0)
        for key, value in self.means.items():
            if key == "n_images":
                continue
            shown = f"{value:.1f}" if key.startswith("n_") else f"{value:.4f}"
            lines.append(f"  {key:<{width}}  {shown}")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"left out: {u['reason']}" for u in self.unusable)
        return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
