"""Bundled models and loading a model from a name or a file.

Bundled models live in ``MODELS_DIR`` as ``<name>.pt`` (a napari-litenext checkpoint) with a
``<name>.md`` model card next to it. Listing them reads only the folder and the cards, so the
``models`` command and napari's start-up do not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MODELS_DIR", "DEFAULT_MODEL", "bundled_models", "load_model", "model_summary", "model_card_text"]

#: Folder of the bundled ``<name>.pt`` checkpoints and ``<name>.md`` cards.
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: The model ``napari-litenext predict`` uses without ``--model``, and the Segment widget's first choice.
DEFAULT_MODEL = "nuclei"


def bundled_models() -> dict[str, Path]:
    """Bundled models, name -> checkpoint path, sorted by name (empty if none are installed)."""
    folder = Path(MODELS_DIR)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.pt")) if p.is_file() and not p.name.startswith(".")}


def model_card_text(name: str) -> str:
    """The Markdown card of bundled model ``name`` ("" if it has none)."""
    card = Path(MODELS_DIR) / f"{name}.md"
    return card.read_text(encoding="utf-8") if card.is_file() else ""


def model_summary(name: str) -> str:
    """One line about bundled model ``name``: the first sentence of its card's first paragraph."""
    for block in model_card_text(name).split("\n\n"):
        text = " ".join(line.strip() for line in block.strip().splitlines())
        if text and not text.startswith(("#", "---", "|", "<!--")):
            end = text.find(". ")
            return text[: end + 1] if end >= 0 else text
    return "(no model card)"


def _looks_like_path(source: str) -> bool:
    return (os.sep in source or "/" in source or source.startswith(".")
            or source.lower().endswith(_CHECKPOINT_SUFFIXES))


def load_model(source: str | os.PathLike, device: Any = None):
    """A LiteNeXt ready for ``predict``.

    Args:
        source: a bundled model name (see ``bundled_models``), or the path of a checkpoint in
            this package's format or in the authors' repository layout (a ``state_dict``).
        device: torch device (``"cpu"``, ``"cuda"``, ``"mps"``, ...); None or ``"auto"`` picks
            CUDA, then MPS, then CPU.

    Returns:
        ``LiteNeXt`` in eval mode on ``device``, with attributes ``inference``
        (``InferenceConfig``), ``card`` (``ModelCard``) and ``sha256``.

    Raises:
        CheckpointError: an unknown name (the message lists the bundled ones), a missing file, or
            a file that is truncated, corrupt or not a LiteNeXt.
        ValueError: ``device`` is not available.
    """
    from .checkpoint import CheckpointError, load_checkpoint
    from .device import resolve_device

    dev = resolve_device(device)
    if isinstance(source, os.PathLike):
        path = Path(source)
    else:
        text = str(source).strip()
        models = bundled_models()
        if text in models:
            path = models[text]
        elif Path(text).expanduser().is_file() or _looks_like_path(text):
            path = Path(text).expanduser()
        else:
            names = ", ".join(models) if models else "none installed"
            raise CheckpointError(f"unknown model {text!r}; bundled models: {names}; "
                                  "or give the path of a .pt checkpoint")
    model = load_checkpoint(path).build_model()
    return model.to(dev).eval()
