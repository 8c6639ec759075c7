"""Checks that make an untrusted checkpoint file safe to load.

Nothing is built or allocated beyond the size of the file until the file has shown that it holds
a LiteNeXt. Each step bounds the cost of the next:

1. ``check_archive`` reads only the zip directory and the pickle's opcodes, building no object:
   uncompressed records that fit in the file, one pickle of at most ``MAX_PICKLE_BYTES`` that
   calls only what ``torch.save`` writes for tensors and ordered dicts. torch's safe loader alone
   admits more (``bytearray(n)``, dtype conversions of views), with which an 844-byte file makes
   ``torch.load(..., weights_only=True)`` allocate 2 GB.
2. ``check_model_config``: the stored settings are integers within ``MODEL_BOUNDS``.
3. ``check_weights``: names, shapes and dtypes against the network those settings describe,
   built on torch's "meta" device (shapes only, no memory); the bytes the tensors declare must be
   in the file; every value finite. Only tensor metadata is read until the finiteness check.
"""

from __future__ import annotations

import functools
import io
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import InferenceConfig, ModelConfig
from ..errors import CheckpointError
from .model import LiteNeXt

__all__ = ["MAX_PICKLE_BYTES", "MAX_CALLS", "MODEL_BOUNDS", "MAX_DEPTH", "MAX_EDGE", "check_archive",
           "check_model_config", "check_inference", "check_weights", "check_names_and_shapes",
           "expected_shapes", "show", "unreadable", "first_line"]

#: Largest pickle read (the archive's ``data.pkl``: settings, card, training history and the
#: index of the tensors, not their values). Scanning it and unpickling it with torch's
#: pure-Python unpickler costs about 0.5 s of CPU per MiB. The paper's model with its full
#: training state takes 70 KB, plus about 100 bytes per epoch of history, so 1 MiB holds some
#: 9,000 epochs; the largest network within the bounds below, about 500 KB.
MAX_PICKLE_BYTES = 1 << 20
#: Most calls (two per tensor: its rebuild and its hooks' OrderedDict) a pickle may make, at about
#: 40 us of CPU each. The paper's model with its training state makes 1,420; the largest network
#: within the bounds below, about 10,000.
MAX_CALLS = 20_000

#: Upper bounds of the stored network settings (the paper's model: 3, 16, 7, 128; depths 1).
#: They are 4 to 21 times the paper's values, far beyond a lightweight model (all at their
#: bounds: 2048-channel last stages, 840 tensors, 1.07 G parameters), yet small enough that
#: describing that network on the meta device takes 0.1 s and its training state (about 5,000
#: tensors, 500 KB of pickle) stays within the limits above. What a file may make us allocate
#: is bounded separately, by the file's own size.
MODEL_BOUNDS = {"in_channels": 64, "base_width": 256, "kernel_size": 31, "fusion_dim": 2048}
#: Upper bound of each stage's number of mixer blocks (the paper: 1).
MAX_DEPTH = 16
#: Largest stored input or tile edge in pixels (the paper's models: 256 and 512). InferenceConfig
#: has no upper bound, and a file's value is what ``predict`` allocates for: at 4096 px the
#: network's activations already take gigabytes. A user can still ask for more at predict time.
MAX_EDGE = 4096

# What torch.save writes: a rebuild function for tensors (and parameters), one storage type per
# dtype, and OrderedDict for state dicts. Every other global is refused before unpickling.
_ALLOWED_GLOBALS = frozenset(
    ["collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter"]
    + [f"torch {kind}Storage" for kind in
       ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")])
# Opcodes that name a global the scan cannot read statically; torch.save (protocol 2) never writes them.
_REFUSED_OPCODES = frozenset(["STACK_GLOBAL", "EXT1", "EXT2", "EXT4"])
_CALL_OPCODES = frozenset(["REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ"])


def show(value: Any) -> str:
    """A short, always printable description of an untrusted value for an error message."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):  # str() of a 5000-digit integer raises ValueError
        return str(value) if abs(value) < 10 ** 15 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    return f"a {type(value).__name__}"


def _refuse_damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} {why}; it is damaged or not a LiteNeXt checkpoint: re-export or "
                           "re-download it")


def unreadable(path: Path) -> CheckpointError:
    """The error for a file that is not a readable zip-format PyTorch checkpoint."""
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt, another "
                           "kind of file, or saved by a PyTorch older than 1.6); re-download or re-export it")


def check_archive(path: Path, size: int, data: bytes | None = None) -> None:
    """Check the zip directory and the pickle's opcodes of the checkpoint at ``path``.

    Args:
        path: the file (named in messages).
        size: its size in bytes.
        data: the archive's bytes when it is held in memory (e.g. inside a package); None reads
            ``path``.

    Raises:
        CheckpointError: not a zip of uncompressed records within the file, a pickle over
            ``MAX_PICKLE_BYTES`` or with more than ``MAX_CALLS`` calls, or a pickle naming any
            global other than those ``torch.save`` writes for tensors and state dicts.
    """
    try:
        with zipfile.ZipFile(path if data is None else io.BytesIO(data)) as archive:
            infos = archive.infolist()
            record = _pickle_record(infos, size, path)
            pickled = archive.read(record)
    except CheckpointError:
        raise
    except Exception:  # a damaged directory raises BadZipFile, OSError, struct.error, ...
        raise unreadable(path) from None
    _check_pickle(pickled, path)


def _pickle_record(infos: list[zipfile.ZipInfo], size: int, path: Path) -> zipfile.ZipInfo:
    names = [info.filename for info in infos]
    if not names:
        raise unreadable(path)
    if len(set(names)) != len(names):  # zip readers disagree on which of two namesakes they read
        raise _refuse_damaged(path, "holds two records of the same name")
    # Compressed records could expand far beyond the file; torch.save never compresses.
    if any(i.compress_type != zipfile.ZIP_STORED or i.compress_size != i.file_size for i in infos) \
            or sum(i.file_size for i in infos) > size:
        raise _refuse_damaged(path, "holds compressed records or records larger than the file")
    # torch reads the pickle from the folder of the archive's first record.
    name = names[0].split("/")[0] + "/data.pkl"
    record = next((i for i in infos if i.filename == name), None)
    if record is None:
        raise unreadable(path)
    if record.file_size > MAX_PICKLE_BYTES:
        raise _refuse_damaged(path, f"has a settings pickle of {record.file_size:,} bytes (at most "
                                    f"{MAX_PICKLE_BYTES:,} are read)")
    return record


def _check_pickle(data: bytes, path: Path) -> None:
    calls = 0
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES or (opcode.name in ("GLOBAL", "INST")
                                                   and arg not in _ALLOWED_GLOBALS):
                what = str(arg).replace(" ", ".") if opcode.name in ("GLOBAL", "INST") else opcode.name
                raise CheckpointError(
                    f"{path} holds objects other than tensors and plain containers ({what[:80]}), which "
                    "are not loaded for safety; save only the state dict")
            calls += opcode.name in _CALL_OPCODES
    except CheckpointError:
        raise
    except Exception:  # ValueError, UnicodeDecodeError, ... of a truncated or altered pickle
        raise unreadable(path) from None
    if calls > MAX_CALLS:
        raise _refuse_damaged(path, f"rebuilds {calls} objects (at most {MAX_CALLS} are allowed)")


def _bounded_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_model_config(data: Any, path: Path) -> ModelConfig:
    """The ``ModelConfig`` stored as ``data``, after checking types and ``MODEL_BOUNDS``.

    Raises:
        CheckpointError: ``data`` is not a dict of in-bounds integers (and four depths), or has
            keys this version does not know.
    """
    if not isinstance(data, dict):
        raise _refuse_damaged(path, f"stores its network settings as {show(data)}, not a dict")
    defaults = ModelConfig()
    for name, high in MODEL_BOUNDS.items():
        value = data.get(name, getattr(defaults, name))
        if not _bounded_int(value, 1, high) or (name == "kernel_size" and value % 2 == 0):
            kind = "an odd integer" if name == "kernel_size" else "an integer"
            raise _refuse_damaged(path, f"stores {name} {show(value)}, not {kind} in 1..{high} (the paper's "
                                        f"model has {getattr(defaults, name)})")
    depths = data.get("depths", list(defaults.depths))
    if not isinstance(depths, (list, tuple)) or len(depths) != 4 \
            or not all(_bounded_int(d, 1, MAX_DEPTH) for d in depths):
        shown = "[" + ", ".join(show(d) for d in depths[:4]) + "]" if isinstance(depths, (list, tuple)) \
            else show(depths)
        raise _refuse_damaged(path, f"stores depths {shown}, not four integers in 1..{MAX_DEPTH}")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as exc:  # keys this version does not know: the message says upgrade
        raise CheckpointError(f"{path}: {first_line(exc)}") from None


def check_inference(inference: InferenceConfig, path: Path) -> None:
    """Refuse stored input and tile sizes above ``MAX_EDGE`` (InferenceConfig checks the rest).

    Raises:
        CheckpointError: naming the setting.
    """
    for name in ("input_size", "tile_size"):
        value = getattr(inference, name)
        if value > MAX_EDGE:
            raise _refuse_damaged(path, f"stores {name} {show(value)} px, above {MAX_EDGE}")


@functools.lru_cache(maxsize=8)
def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``LiteNeXt(config)``'s state dict, computed on the meta
    device so that no weight is allocated."""
    with torch.device("meta"):
        model = LiteNeXt(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_names_and_shapes(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor],
                           path: Path | str) -> None:
    """Compare a state dict's names and shapes with ``expected`` (reads no tensor data).

    Raises:
        CheckpointError: naming the missing, unexpected and wrongly shaped tensors.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names([k[:80] for k in unexpected])}")
        if wrong:
            parts.append("wrong shape " + _names([f"{k} {_shape(state[k])} != {expected[k]}" for k in wrong]))
        raise CheckpointError(f"{path} is not a LiteNeXt with this configuration: {'; '.join(parts)}")


def check_weights(state: Any, config: ModelConfig, path: Path, size: int) -> None:
    """Check a loaded state dict against the network ``config`` describes, before it is built.

    Args:
        state: the file's state dict.
        config: the checked settings.
        path: the file, for messages.
        size: the file's size in bytes: the tensors' declared bytes must fit in it, so a tiny
            file cannot declare a huge (zero-stride) tensor or make us build a huge network.

    Raises:
        CheckpointError: not a dict of floating-point CPU tensors by name, names or shapes that
            differ from the network's, more declared bytes than the file holds, or a NaN or
            infinite value (naming the first tensor that holds one).
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise _refuse_damaged(path, "holds weights that are not a dict of tensors by name")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided \
                or tensor.device.type != "cpu" or not tensor.dtype.is_floating_point:
            kind = f"a {tensor.dtype} tensor" if isinstance(tensor, torch.Tensor) else show(tensor)
            raise _refuse_damaged(path, f"holds {kind} as weight {show(name)}, not dense floating-point values")
    check_names_and_shapes(expected_shapes(config), state, path)
    declared = sum(t.numel() * t.element_size() for t in state.values())
    if declared > size:
        raise _refuse_damaged(path, f"declares {_bytes(declared)} of weights in a file of {_bytes(size)}")
    for name, tensor in state.items():
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path} holds NaN or infinite weights (first in {name}): the training diverged or the "
                "file is damaged; use an earlier checkpoint, or retrain with a lower learning rate")


def _bytes(count: int) -> str:
    return f"{count / 2 ** 20:.1f} MiB" if count >= 2 ** 20 else f"{count / 2 ** 10:.1f} KiB"


def _shape(tensor: torch.Tensor) -> str:
    shape = tuple(tensor.shape)
    return str(shape) if len(shape) <= 8 else f"({len(shape)} dimensions)"


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters, for a one-line error."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

