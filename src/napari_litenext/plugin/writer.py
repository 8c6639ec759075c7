"""napari writer: a Labels layer to TIFF plus a JSON sidecar that records how it was made.

``labels.tif`` gets the label image (zlib-compressed, smallest unsigned integer type that holds
the ids), ``labels.json`` beside it the provenance: the layer's ``metadata["litenext"]`` as set by
the segment widget (model name, model SHA-256, threshold, instances, min_size, ...), plus the layer's
name, shape, scale and translate, the TIFF's SHA-256 and the package version.

Overwriting follows napari's convention: the path comes from napari's save dialog, which already
asked the user before replacing an existing file, so the TIFF and a sidecar written by this
writer are replaced. A ``.json`` file that this writer did not write is never replaced: the save
fails before anything is written. Both files are written to a temporary name and renamed, so an
interrupted save leaves the previous files intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..io.files import atomic_write

__all__ = ["write_labels", "sidecar_path", "SIDECAR_FORMAT", "TIFF_SUFFIXES"]

SIDECAR_FORMAT = "napari-litenext-labels"
SIDECAR_VERSION = 1
TIFF_SUFFIXES = (".tif", ".tiff")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar for a labels TIFF: ``name.tif`` -> ``name.json``."""
    return Path(path).with_suffix(".json")


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Labels: TIFF plus JSON sidecar.

    Args:
        path: destination ending in ``.tif`` or ``.tiff`` (chosen in napari's save dialog).
        data: the layer's label array (any integer or bool array; for multiscale labels the
            full-resolution level is written).
        meta: the layer's attributes as napari passes them (``name``, ``scale``, ``translate``,
            ``metadata``, ...).

    Returns:
        ``[tiff_path, json_path]``, the files written.

    Raises:
        ValueError: wrong suffix, or data that are not integer labels.
        FileExistsError: a ``.json`` that this writer did not write is in the way.
    """
    tiff = Path(path)
    if tiff.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"cannot write labels to {tiff.name!r}: use a .tif or .tiff file name")
    sidecar = sidecar_path(tiff)
    _check_sidecar_is_ours(sidecar)

    labels = _as_label_array(data)
    axes = _axes(labels.ndim)
    digests: list[str] = []

    def write_and_hash(tmp: str) -> None:
        _write_tiff(tmp, labels, axes)
        digests.append(hashlib.sha256(Path(tmp).read_bytes()).hexdigest())

    atomic_write(tiff, write_and_hash)

    layer_meta = meta.get("metadata") or {}
    provenance = layer_meta.get("litenext")
    record = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "labels_file": tiff.name,
        "labels_sha256": digests[0],
        "layer": meta.get("name"),
        "shape": list(labels.shape),
        "dtype": str(labels.dtype),
        "axes": axes,
        "n_labels": int(np.count_nonzero(np.unique(labels))),
        "scale": _jsonable(meta.get("scale")),
        "translate": _jsonable(meta.get("translate")),
        "units": _jsonable(meta.get("units")),
        "litenext": _jsonable(provenance),
        "written_by": f"napari-litenext {_version()}",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if provenance is None:
        record["note"] = "this layer carries no napari-litenext segmentation settings (not made by its segment widget)"
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    atomic_write(sidecar, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [str(tiff), str(sidecar)]


def _check_sidecar_is_ours(sidecar: Path) -> None:
    if not sidecar.exists():
        return
    try:
        ours = json.loads(sidecar.read_text(encoding="utf-8")).get("format") == SIDECAR_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{sidecar} exists and was not written by napari-litenext; nothing was saved: "
            "choose another file name or move that file")


def _as_label_array(data: Any) -> np.ndarray:
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        data = data[0]  # multiscale: the full-resolution level
    labels = np.asarray(data)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}; convert the layer to labels first")
    if labels.size == 0:
        raise ValueError("the labels layer is empty (a zero-sized array); nothing to save")
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0:
        # The smallest unsigned type that holds every id keeps files small and readable in Fiji.
        for dtype in (np.uint8, np.uint16, np.uint32):
            if hi <= np.iinfo(dtype).max:
                return labels.astype(dtype, copy=False)
    return labels


def _axes(ndim: int) -> str:
    return "TZYX"[-ndim:] if ndim <= 4 else "Q" * (ndim - 4) + "TZYX"


def _write_tiff(tmp: str, labels: np.ndarray, axes: str) -> None:
    import tifffile

    tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack",
                     metadata={"axes": axes}, bigtiff=labels.nbytes > 2**31)


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays, tuples, paths; anything else as its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _version() -> str:
    from .. import __version__

    return __version__
