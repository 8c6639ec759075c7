"""Reading and writing LiteNeXt checkpoints.

Two layouts are read, both with ``torch.load(..., weights_only=True)`` so that no file can run code:

* ours: a dict with ``format == "napari-litenext"``, the model and inference configs, the model card,
  the network's state dict and a SHA-256 of all of it, verified on load;
* the authors' repository's: a dict with ``model_state_dict`` (or a bare state dict), key names as
  listed in the specification, optionally prefixed ``module.`` by DataParallel. These carry no
  config, so the paper's configuration and resize-mode inference at 256 px are assumed.

Files are untrusted: ``checkpoint_guard`` checks the archive, the settings and the weights before
anything is built, so that loading costs time and memory in proportion to the file's size and a
file refused for any reason raises ``CheckpointError``.

Writes are atomic (temporary file in the same folder, then rename), so an interrupted save never
leaves a truncated checkpoint behind or destroys the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..config import InferenceConfig, ModelCard, ModelConfig
from ..io.files import atomic_write
from .checkpoint_guard import (check_archive, check_inference, check_model_config, check_names_and_shapes,
                               check_weights, first_line, show, unreadable)
from .model import LiteNeXt

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "state_dict_sha256",
           "convert_authors_state_dict", "atomic_write"]

FORMAT = "napari-litenext"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to rebuild and use a trained model.

    Attributes:
        config: network shape.
        inference: how to pre-process input and post-process output.
        card: model card.
        state_dict: weights of the segmentation network only.
        extra: training state (optimiser, epoch, history), absent from exported models.
        sha256: digest of config, inference settings and weights.
    """

    config: ModelConfig
    inference: InferenceConfig
    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def build_model(self) -> LiteNeXt:
        """A LiteNeXt in eval mode with these weights, carrying ``inference``, ``card`` and ``sha256``."""
        model = LiteNeXt(self.config, self.inference, self.card)
        _load_state(model, self.state_dict)
        model.sha256 = self.sha256
        return model.eval()


def state_dict_sha256(state_dict: dict[str, torch.Tensor], config: ModelConfig | dict[str, Any],
                      inference: InferenceConfig | dict[str, Any]) -> str:
    """SHA-256 over the configs (canonical JSON) and every tensor's name, dtype, shape and bytes.

    ``config`` and ``inference`` may be the dicts a file stores: a file is verified against the
    settings as it was written, so that a newer release whose configs gained a field (with a
    default) still verifies the files older releases wrote.
    """
    settings = {"config": config if isinstance(config, dict) else config.to_dict(),
                "inference": inference if isinstance(inference, dict) else inference.to_dict()}
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # A channels-last 1x1 conv weight counts as contiguous yet keeps a last stride != 1,
        # which view(uint8) rejects; flattening gives the same bytes with stride 1.
        flat = tensor.reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: LiteNeXt, inference: InferenceConfig,
                    card: ModelCard | None = None, extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` with its settings to ``path`` atomically.

    Args:
        path: destination file (``.pt``); parent folders are created.
        model: the segmentation network (not an SRP wrapper).
        inference: settings stored with the weights.
        card: model card; a blank one if omitted.
        extra: training state to resume from; must hold only tensors and primitive containers.

    Returns:
        The checkpoint's SHA-256.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    digest = state_dict_sha256(state, model.config, inference)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "inference": inference.to_dict(),
        "card": (card or ModelCard()).to_dict(),
        "state_dict": state,
        "sha256": digest,
    }
    if extra:
        payload["extra"] = extra
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return digest


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint in our layout or the authors' layout.

    Time and memory are bounded by the file's size: see ``checkpoint_guard`` for what is checked
    before anything is built.

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch file, holds objects other
            than tensors and primitive containers, has settings out of bounds, weights whose names,
            shapes or dtypes are not those of a LiteNeXt with its settings, more weights than the
            file holds, NaN or infinite weights, or fails its SHA-256 check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}; give a bundled model name or an existing .pt file")
    size = path.stat().st_size
    check_archive(path, size)
    # No mmap: the archive check bounds what a plain read costs by the file's size, and a mapping
    # kept for the Checkpoint's lifetime would crash the process (SIGBUS) if the file were
    # truncated underneath, and lock it against replacement on Windows.
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError):
        # torch's own messages here describe its zip reader's internals, not the user's problem.
        raise unreadable(path) from None
    except Exception as exc:  # pickle.UnpicklingError from weights_only, among others
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, which are not loaded "
            f"for safety ({first_line(exc)}); save only the state dict") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds {show(raw)}, not a LiteNeXt checkpoint dict")
    if isinstance(raw.get("format"), str) and raw["format"] == FORMAT:
        return _from_ours(raw, path, size)
    return _from_authors(raw, path, size)


def _from_ours(raw: dict, path: Path, size: int) -> Checkpoint:
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} is a damaged napari-litenext checkpoint (format_version "
                              f"{show(version)}); re-export or re-download it")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer napari-litenext; upgrade to read it")
    if "config" not in raw:
        raise CheckpointError(f"{path} is a damaged napari-litenext checkpoint (no network settings); "
                              "re-export or re-download it")
    config = check_model_config(raw["config"], path)
    try:
        inference = InferenceConfig.from_dict(raw["inference"])
        card = ModelCard.from_dict(raw.get("card", {}))
        _check_card(card)
        state, extra = raw["state_dict"], raw.get("extra", {})
        if not isinstance(extra, dict):
            raise TypeError(f"training state is {show(extra)}, not a dict")
    # Any failure to rebuild these settings from untrusted values (a wrong type, a huge integer,
    # a deep list) means the same to the user: the file is damaged.
    except Exception as exc:
        raise CheckpointError(f"{path} is a damaged napari-litenext checkpoint ({first_line(exc)}); "
                              "re-export or re-download it") from None
    check_inference(inference, path)
    check_weights(state, config, path, size)
    digest = state_dict_sha256(state, raw["config"], raw["inference"])
    stored = raw.get("sha256")
    if not isinstance(stored, str) or stored != digest:
        shown = stored[:12] + "..." if isinstance(stored, str) else show(stored)
        raise CheckpointError(
            f"{path} fails its SHA-256 check (stored {shown}, computed {digest[:12]}...): the file was "
            "modified or damaged; re-export or re-download it")
    return Checkpoint(config, inference, card, state, extra, digest)


def _check_card(card: ModelCard) -> None:
    """Raise TypeError unless the card holds text, and numbers by name as metrics."""
    texts = [v for k, v in card.to_dict().items() if k != "metrics"]
    metrics = card.metrics
    if not all(isinstance(v, str) for v in texts) or not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in metrics.items()):
        raise TypeError("the model card holds values other than text and numeric metrics")


_MIXER_PARTS = {"conv_local": "local.conv", "ln1.layernorm": "local.norm", "conv": "depthwise.conv",
                "ln3.layernorm": "depthwise.norm", "conv1x1": "pointwise.conv", "ln2.layernorm": "pointwise.norm"}
_FUSION_PARTS = {"norm.conv1x1": "value.conv", "norm.bn.layernorm": "value.norm", "mlp.0": "key_in",
                 "mlp.2": "key_out"}
_CLG_PARTS = {"0": "conv", "1.layernorm": "norm"}


def _authors_key(key: str) -> str:
    """Our name for one authors' key (without "module."), or the key unchanged if unknown."""
    rules = [
        (r"patches_parition\.(0|1\.layernorm)\.(.+)", lambda m: f"stem.{_CLG_PARTS[m[1]]}.{m[2]}"),
        (r"stage1\.0\.(.+)\.(weight|bias)", lambda m: f"stages.0.blocks.0.{_MIXER_PARTS[m[1]]}.{m[2]}"),
        (r"stage([234])\.1\.(.+)\.(weight|bias)",
         lambda m: f"stages.{int(m[1]) - 1}.blocks.0.{_MIXER_PARTS[m[2]]}.{m[3]}"),
        (r"stage([234])\.0\.patches_merge\.(1|2\.layernorm)\.(.+)",
         lambda m: f"stages.{int(m[1]) - 1}.down.proj.{'conv' if m[2] == '1' else 'norm'}.{m[3]}"),
        (r"bottle_neck\.0\.(in|out)_layers\.(0|1\.layernorm)\.(.+)",
         lambda m: f"bottleneck.conv{1 if m[1] == 'in' else 2}.{_CLG_PARTS[m[2]]}.{m[3]}"),
        (r"attention\.normfm([1-4]|Decode)\.(.+)\.(weight|bias)",
         lambda m: f"fusion.units.{4 if m[1] == 'Decode' else int(m[1]) - 1}.{_FUSION_PARTS[m[2]]}.{m[3]}"),
        (r"attention\.mlp\.(.+)", lambda m: f"fusion.score.{m[1]}"),
        (r"rb4\.conv1x1\.(.+)", lambda m: f"up.conv.{m[1]}"),
        (r"rb4\.bn\.layernorm\.(.+)", lambda m: f"up.norm.{m[1]}"),
        (r"head\.(.+)", lambda m: f"head.{m[1]}"),
    ]
    for pattern, build in rules:
        match = re.fullmatch(pattern, key)
        if match:
            try:
                return build(match)
            except KeyError:  # a sub-part name the layout does not have
                return key
    return key


def convert_authors_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of an authors'-layout state dict to this package's names.

    Keys prefixed ``module.`` (DataParallel) are accepted. Unknown keys are kept unchanged so that
    the strict check that follows names them.
    """
    return {_authors_key(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _from_authors(raw: dict, path: Path, size: int) -> Checkpoint:
    state = raw.get("model_state_dict", raw.get("state_dict", raw))
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        keys = sorted(k[:40] for k in raw if isinstance(k, str))[:6]
        raise CheckpointError(
            f"{path} is neither a napari-litenext checkpoint nor a state dict of tensors (keys: "
            f"{keys}); export the model's state_dict() and try again")
    state = convert_authors_state_dict(state)
    config = ModelConfig()
    check_weights(state, config, path, size)
    inference = InferenceConfig(normalisation="dtype", mode="resize", input_size=256)
    card = ModelCard(name=path.stem, description="Imported from the authors' LiteNeXt repository layout.",
                     trained_by="authors' code (imported)")
    return Checkpoint(config, inference, card, state, {}, state_dict_sha256(state, config, inference))


def _load_state(model: LiteNeXt, state: dict[str, torch.Tensor]) -> None:
    check_names_and_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, "checkpoint")
    model.load_state_dict(state, strict=True)
