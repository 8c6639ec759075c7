"""Writers of damaged and hostile checkpoint files for the loader's fuzz tests.

``write_ours`` stores any settings in our layout with a SHA-256 that matches them, so that the
settings themselves, not the digest, must be what refuses them. ``write_archive`` writes what
torch.save cannot (views with a huge declared shape, calls to ``bytearray``) from a hand-made
pickle, laid out as torch.save lays out its zip.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from napari_litenext.config import InferenceConfig, ModelConfig
from napari_litenext.network.checkpoint import FORMAT, state_dict_sha256
from napari_litenext.network.model import LiteNeXt

#: A network 2 channels wide: 10,061 parameters, 78 KB on disk.
TINY = ModelConfig(in_channels=1, base_width=2, kernel_size=3, fusion_dim=4)


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in LiteNeXt(TINY).state_dict().items()}


_DEFAULT: Any = object()


def write_ours(path: Path, state: dict | None = None, config: Any = _DEFAULT, inference: Any = _DEFAULT,
               **top: Any) -> Path:
    """Our layout with any settings and a SHA-256 that matches them (when they are JSON)."""
    state = tiny_state() if state is None else state
    config = TINY.to_dict() if config is _DEFAULT else config
    inference = InferenceConfig().to_dict() if inference is _DEFAULT else inference
    try:
        digest = state_dict_sha256(state, types.SimpleNamespace(to_dict=lambda: config),
                                   types.SimpleNamespace(to_dict=lambda: inference))
    except (TypeError, ValueError, AttributeError):
        digest = "0" * 64
    payload = {"format": FORMAT, "format_version": 1, "config": config, "inference": inference,
               "card": {"name": "fuzz"}, "state_dict": state, "sha256": digest}
    torch.save({**payload, **top}, path)
    return path


class Storage:
    """Stands for a storage record of ``count`` float32 values in ``write_archive``."""

    def __init__(self, key: str, count: int) -> None:
        self.key, self.count = key, count


class View:
    """Pickles as torch.save pickles a tensor: a view of ``storage`` with any size and stride."""

    def __init__(self, storage: Storage, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.size, self.stride = storage, size, stride

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.size, self.stride, False,
                                                  collections.OrderedDict())


class Call:
    """Pickles as a call of ``func(*args)``, which unpickling performs."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any):
        if isinstance(obj, Storage):
            return "storage", torch.FloatStorage, obj.key, "cpu", obj.count
        return None


def as_views(state: dict[str, torch.Tensor], records: dict[str, bytes]) -> dict[str, View]:
    """Float32 tensors as ``View``s of storages added to ``records``, for ``write_archive``."""
    out = {}
    for name, tensor in state.items():
        key = str(len(records))
        records[key] = tensor.float().contiguous().reshape(-1).numpy().tobytes()
        out[name] = View(Storage(key, tensor.numel()), tuple(tensor.shape), tuple(tensor.contiguous().stride()))
    return out


def write_archive(path: Path, obj: Any, records: dict[str, bytes] | None = None, protocol: int = 2) -> Path:
    """A zip laid out as torch.save lays it out, around a hand-made pickle of ``obj``."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path
