"""Reading and writing LiteNeXt checkpoints.

Two layouts are read, both with ``torch.load(..., weights_only=True)`` so that no file can run code:

* ours: a dict with ``format == "napari-litenext"``, the model and inference configs, the model card,
  the network's state dict and a SHA-256 of all of it, verified on load;
* the authors' repository's: a dict with ``model_state_dict`` (or a bare state dict), key names as
  listed in the specification, optionally prefixed ``module.`` by DataParallel. These carry no
  config, so the paper's configuration and resize-mode inference at 256 px are assumed.

Writes are atomic (temporary file in the same folder, then rename), so an interrupted save never
leaves a truncated checkpoint behind or destroys the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..config import InferenceConfig, ModelCard, ModelConfig
from ..io.files import atomic_write
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
        model = LiteNeXt(self.config)
        _load_state(model, self.state_dict)
        model.eval()
        model.inference = self.inference
        model.card = self.card
        model.sha256 = self.sha256
        return model


def state_dict_sha256(state_dict: dict[str, torch.Tensor], config: ModelConfig,
                      inference: InferenceConfig) -> str:
    """SHA-256 over the configs (canonical JSON) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": config.to_dict(), "inference": inference.to_dict()},
                             sort_keys=True).encode())
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

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch file, holds objects other
            than tensors and primitive containers, is not a LiteNeXt, or fails its SHA-256 check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}; give a bundled model name or an existing .pt file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        # torch's own messages here describe its zip reader's internals, not the user's problem.
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt, or "
                              "another kind of file); re-download or re-export it") from None
    except Exception as exc:  # pickle.UnpicklingError from weights_only, among others
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, which are not loaded "
            f"for safety ({_first_line(exc)}); save only the state dict") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a LiteNeXt checkpoint dict")
    if raw.get("format") == FORMAT:
        return _from_ours(raw, path)
    return _from_authors(raw, path)


def _from_ours(raw: dict, path: Path) -> Checkpoint:
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer napari-litenext; upgrade to read it")
    try:
        config = ModelConfig.from_dict(raw["config"])
        inference = InferenceConfig.from_dict(raw["inference"])
        card = ModelCard.from_dict(raw.get("card", {}))
        state = raw["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged napari-litenext checkpoint ({_first_line(exc)})") from None
    digest = state_dict_sha256(state, config, inference)
    if raw.get("sha256") != digest:
        raise CheckpointError(
            f"{path} fails its SHA-256 check (stored {str(raw.get('sha256'))[:12]}..., computed "
            f"{digest[:12]}...): the file was modified or damaged; re-export or re-download it")
    ckpt = Checkpoint(config, inference, card, state, raw.get("extra", {}), digest)
    _check_state(LiteNeXt(config), state, path)
    return ckpt


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


def _from_authors(raw: dict, path: Path) -> Checkpoint:
    state = raw.get("model_state_dict", raw.get("state_dict", raw))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is neither a napari-litenext checkpoint nor a state dict of tensors (keys: "
            f"{sorted(map(str, raw))[:6]}); export the model's state_dict() and try again")
    state = convert_authors_state_dict(state)
    config = ModelConfig()
    _check_state(LiteNeXt(config), state, path)
    inference = InferenceConfig(normalisation="dtype", mode="resize", input_size=256)
    card = ModelCard(name=path.stem, description="Imported from the authors' LiteNeXt repository layout.",
                     trained_by="authors' code (imported)")
    return Checkpoint(config, inference, card, state, {}, state_dict_sha256(state, config, inference))


def _check_state(model: LiteNeXt, state: dict[str, torch.Tensor], path: Path | str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        if wrong:
            parts.append("wrong shape " + _names(
                [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong]))
        raise CheckpointError(f"{path} is not a LiteNeXt with this configuration: {'; '.join(parts)}")


def _load_state(model: LiteNeXt, state: dict[str, torch.Tensor]) -> None:
    _check_state(model, state, "checkpoint")
    model.load_state_dict(state, strict=True)


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
