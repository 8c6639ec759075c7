"""What every export starts from and every import ends with: a LiteNeXt with its settings.

The settings travel as one JSON-compatible dict (``settings_metadata``), stored in a BioImage
Model Zoo package's ``config.napari_litenext`` and in an ONNX file's metadata, so that a model
read back has the same network shape, inference settings, card and checkpoint digest.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from ..config import InferenceConfig, ModelCard, ModelConfig
from ..errors import CheckpointError, LiteNeXtError

__all__ = ["SETTINGS_KEY", "MissingDependencyError", "require", "resolve_model", "settings_metadata",
           "settings_from_metadata", "settings_digest", "refuse_existing"]

#: Key of the settings in a package's ``config`` and in ONNX metadata.
SETTINGS_KEY = "napari_litenext"
_FORMAT = "napari-litenext"
_FORMAT_VERSION = 1


class MissingDependencyError(LiteNeXtError, ImportError):
    """An optional package that an export or import needs is not installed; the message says how to get it."""


def require(module: str, purpose: str) -> None:
    """Check that ``module`` can be imported, before any work is done.

    Raises:
        MissingDependencyError: it cannot; the message names the pip command.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{module} is needed to {purpose} but is not installed: pip install 'napari-litenext[exchange]'")


def resolve_model(model_or_source: Any):
    """A CPU copy in eval mode of the model to export, carrying ``inference``, ``card``, ``sha256``.

    Args:
        model_or_source: a LiteNeXt (e.g. from ``load_model`` or training; left untouched), or
            what ``load_model`` accepts: a bundled model name, a checkpoint or package path.

    Raises:
        CheckpointError: the source cannot be loaded (see ``load_model``).
        TypeError: ``model_or_source`` is neither a LiteNeXt nor a name or path.
    """
    from ..network.checkpoint import state_dict_sha256
    from ..network.model import LiteNeXt
    from ..network.registry import load_model

    if isinstance(model_or_source, (str, os.PathLike)):
        return load_model(model_or_source, device="cpu")
    if not isinstance(model_or_source, LiteNeXt):
        raise TypeError(f"expected a LiteNeXt, a bundled model name or a checkpoint path, got "
                        f"{type(model_or_source).__name__}")
    model = copy.deepcopy(model_or_source).cpu().eval()
    if not model.sha256:
        # A model that never went through a checkpoint gets the digest a checkpoint would give it.
        state = {k: v.detach() for k, v in model.state_dict().items()}
        model.sha256 = state_dict_sha256(state, model.config, model.inference)
    return model


def settings_metadata(model: Any) -> dict[str, Any]:
    """The settings of ``model`` (from ``resolve_model``) as a JSON-compatible dict."""
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "config": model.config.to_dict(),
        "inference": model.inference.to_dict(),
        "card": model.card.to_dict(),
        "sha256": model.sha256,
    }


def settings_from_metadata(meta: Any, where: str | os.PathLike) -> tuple[ModelConfig, InferenceConfig, ModelCard, str]:
    """Network shape, inference settings, card and checkpoint digest from ``settings_metadata``.

    Args:
        meta: the dict read back.
        where: the file it came from, for messages.

    Raises:
        CheckpointError: ``meta`` is missing, damaged or from a newer napari-litenext.
    """
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise CheckpointError(f"{where} carries no napari-litenext settings (it was not written by "
                              "napari-litenext export); export the model with napari-litenext, or use "
                              "the tool that made it")
    if int(meta.get("format_version", 0)) > _FORMAT_VERSION:
        raise CheckpointError(f"{where} was written by a newer napari-litenext; upgrade to read it")
    try:
        config = ModelConfig.from_dict(meta["config"])
        inference = InferenceConfig.from_dict(meta["inference"])
        card = ModelCard.from_dict(meta.get("card") or {})
        sha256 = str(meta.get("sha256", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} has damaged napari-litenext settings ({exc}); export the "
                              "model again") from None
    return config, inference, card, sha256


def settings_digest(meta: dict, weights: bytes) -> str:
    """SHA-256 over the stored network and inference settings (as stored) and a weights file.

    A package keeps it next to the settings, so that settings edited after export (which would
    make the model's ``sha256`` describe something else) are refused on loading. It hashes the
    dicts as written, not as this release's dataclasses would write them, so that packages keep
    verifying when a later release adds a setting.
    """
    settings = {"config": meta.get("config"), "inference": meta.get("inference"),
                "weights": hashlib.sha256(weights).hexdigest()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> Path:
    """``path`` as a Path, after checking that writing it is allowed.

    Checked before any work, so that a long export does not end in a refusal.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    return path
