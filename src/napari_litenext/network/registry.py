"""Bundled models and loading a model from a name or a file.

Bundled models live in ``MODELS_DIR`` as ``<name>.pt`` (a napari-litenext checkpoint) with a
``<name>.md`` model card next to it. Listing them reads only the folder and the cards, so the
``models`` command and napari's start-up do not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MODELS_DIR", "DEFAULT_MODEL", "bundled_models", "load_model", "model_settings", "resolve_source",
           "read_checkpoint", "model_summary", "model_card_text"]

#: Folder of the bundled ``<name>.pt`` checkpoints and ``<name>.md`` cards.
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: BioImage Model Zoo packages written by ``exchange.export_bioimageio``: a zip or its description.
_PACKAGE_SUFFIXES = (".zip", ".yaml", ".yml")
#: The model ``napari-litenext predict`` uses without ``--model``, and the Segment widget's first choice.
DEFAULT_MODEL = "nuclei"


def bundled_models() -> dict[str, Path]:
    """Bundled models, name -> checkpoint path, sorted by name (empty if none are installed)."""
    folder = Path(MODELS_DIR)
    if not folder.is_dir():
        return {}
    found = sorted(folder.glob("*.pt"), key=lambda p: p.stem)  # by name: "nuclei" before "nuclei-v1"
    return {p.stem: p for p in found if p.is_file() and not p.name.startswith(".")}


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
            or source.lower().endswith(_CHECKPOINT_SUFFIXES + _PACKAGE_SUFFIXES))


def resolve_source(source: str | os.PathLike) -> Path:
    """The checkpoint file a bundled model name or a path stands for.

    Raises:
        CheckpointError: an unknown name (the message lists the bundled ones).
    """
    from ..errors import CheckpointError

    if isinstance(source, os.PathLike):
        return Path(source)
    text = str(source).strip()
    models = bundled_models()
    if text in models:
        return models[text]
    if Path(text).expanduser().is_file() or _looks_like_path(text):
        return Path(text).expanduser()
    names = ", ".join(models) if models else "none installed"
    raise CheckpointError(f"unknown model {text!r}; bundled models: {names}; or give the path of a .pt "
                          "checkpoint or a .zip package")


def model_settings(source: str | os.PathLike):
    """The ``InferenceConfig`` a model stores (what every caller uses unless it overrides a value).

    Lets a form show a model's own settings before anything runs.

    Raises:
        CheckpointError: as ``load_model``.
    """
    return read_checkpoint(resolve_source(source)).inference


def load_model(source: str | os.PathLike, device: Any = None):
    """A LiteNeXt ready for ``predict``.

    Args:
        source: a bundled model name (see ``bundled_models``), the path of a checkpoint in
            this package's format or in the authors' repository layout (a ``state_dict``), or of
            a BioImage Model Zoo package written by ``export_bioimageio`` (``.zip``, ``rdf.yaml``).
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
    from .device import resolve_device

    dev = resolve_device(device)
    path = resolve_source(source)
    model = read_checkpoint(path).build_model()
    return model.to(dev).eval()


def read_checkpoint(path: str | os.PathLike):
    """The ``Checkpoint`` in a checkpoint file, or in a BioImage Model Zoo package (``.zip``,
    ``rdf.yaml``) written by ``napari_litenext.exchange.export_bioimageio``.

    Raises:
        CheckpointError: as ``load_checkpoint`` and ``exchange.read_package``.
    """
    from .checkpoint import load_checkpoint

    if Path(path).suffix.lower() in _PACKAGE_SUFFIXES:
        # The exchange layer sits above this one; imported here only, and it needs no extra packages.
        from ..exchange.package import read_package

        return read_package(path)
    return load_checkpoint(path)
