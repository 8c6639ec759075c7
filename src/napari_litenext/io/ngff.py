"""Zarr and OME-Zarr (NGFF) in and out: images read lazily, labels written block by block.

Reading (``read_zarr``) opens a plain zarr array, or the full-resolution level of an OME-Zarr
image with its axes, pixel sizes and units (NGFF 0.4 on zarr v2 and 0.5 on zarr v3, parsed by
ome-zarr-py); pixels are read only where indexed. Writing (``LabelStore``) creates the level-0
labels array for the caller to fill region by region, then adds a pyramid (every second pixel per
level, the right reduction for label ids) and the NGFF ``multiscales`` and ``image-label``
metadata, either as a labels group inside an OME-Zarr image (``<image>/labels/<name>``, where
napari-ome-zarr shows them over the image) or as a standalone store. Everything is written under a
hidden temporary name and renamed into place at the end, so a store appears whole or not at all.

zarr, dask and ome-zarr-py are imported inside the functions: ``import napari_litenext`` stays
light.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageReadError, InputError

__all__ = ["ZarrImage", "is_zarr_path", "read_zarr", "LabelStore", "temporary_label_store", "PYRAMID_MIN_EDGE"]

#: Pyramid levels are added until the smaller of Y and X is at most this many pixels.
PYRAMID_MIN_EDGE = 256
_NGFF_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


@dataclass
class ZarrImage:
    """An image in a zarr store.

    Attributes:
        array: the full-resolution zarr array (lazy: reading indexes it).
        axes: letters from T, Z, C, Y, X, one per dimension, or None (a plain array: inferred).
        scale: physical pixel size per axis letter (OME-Zarr ``scale`` of level 0).
        units: unit per axis letter where the metadata gives one.
        path: the store (or group) that was opened.
        ome: True for an OME-Zarr image, False for a plain array.
        zarr_format: 2 or 3, for labels written beside it.
        levels: the arrays of every resolution level (OME-Zarr), full resolution first.
        is_labels: the store holds NGFF labels (``image-label`` metadata), not an image.
    """

    array: Any
    axes: str | None
    scale: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    path: Path = Path(".")
    ome: bool = False
    zarr_format: int = 3
    levels: list[Any] = field(default_factory=list)
    is_labels: bool = False


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a ``.zarr`` path or a folder holding zarr metadata (``zarr.json``, ``.zarray``, ``.zgroup``)."""
    p = Path(path)
    if p.name.lower().rstrip("/").endswith(".zarr"):
        return True
    return p.is_dir() and any((p / n).is_file() for n in ("zarr.json", ".zarray", ".zgroup"))


def read_zarr(path: str | os.PathLike) -> ZarrImage:
    """Open a zarr array or an OME-Zarr image without reading its pixels.

    Args:
        path: a zarr store folder: a plain array, an OME-Zarr image (its first multiscales, level
            0), or a group holding exactly one array.

    Raises:
        ImageReadError: missing, not zarr, an OME-Zarr plate or collection, or a group with
            several arrays (the message lists them: open one of them by its path).
    """
    import zarr

    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise ImageReadError(f"{path}: not a zarr store ({_first_line(exc)}); "
                             "give a .zarr folder written by zarr or an OME-Zarr writer") from None
    if isinstance(node, zarr.Array):
        return ZarrImage(node, None, path=path, zarr_format=node.metadata.zarr_format, levels=[node])
    multiscales = _ome_attrs(node).get("multiscales")
    if multiscales:
        return _read_ome(path, node, multiscales[0])
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        array = node[arrays[0]]
        return ZarrImage(array, None, path=path, zarr_format=array.metadata.zarr_format, levels=[array])
    listed = ", ".join(arrays[:6]) or "none"
    raise ImageReadError(f"{path}: a zarr group with {len(arrays)} arrays ({listed}) and no OME-Zarr "
                         "multiscales metadata; give the path of one array, e.g. "
                         f"{path / (arrays[0] if arrays else 'ARRAY')}")


def _ome_attrs(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))  # NGFF 0.5 nests its keys under "ome"


def _read_ome(path: Path, group: Any, multiscale: dict[str, Any]) -> ZarrImage:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path), mode="r")
    if location is None:
        raise ImageReadError(f"{path}: not an OME-Zarr image")
    # ome-zarr-py parses every NGFF version's axes and transformations into one form.
    meta, datasets = None, None
    for node in Reader(location)():
        specs = [s for s in node.specs if isinstance(s, Multiscales)]
        if specs:
            meta, datasets = node.metadata, specs[0].datasets
            break
    if meta is None or not datasets:
        raise ImageReadError(f"{path}: OME-Zarr metadata without a multiscale image")
    axes_meta = meta.get("axes") or []
    names = [(a["name"] if isinstance(a, dict) else str(a)).upper() for a in axes_meta]
    levels = [group[d] for d in datasets]
    array = levels[0]
    if len(names) != array.ndim or any(n not in _NGFF_TYPES for n in names):
        axes = None  # unusual axis names: let predict infer them (or --axes)
    else:
        axes = "".join(names)
    scale: dict[str, float] = {}
    for transform in (meta.get("coordinateTransformations") or [[]])[0]:
        if transform.get("type") == "scale" and axes:
            scale = {a: float(s) for a, s in zip(axes, transform["scale"])}
    units = {n: str(a["unit"]) for n, a in zip(names, axes_meta) if isinstance(a, dict) and a.get("unit")}
    return ZarrImage(array, axes, scale, units, path, True, array.metadata.zarr_format, levels,
                     "image-label" in _ome_attrs(group))


class LabelStore:
    """A labels output in zarr, filled region by region, then finished with a pyramid and NGFF metadata.

    Args:
        path: a standalone store to create (``cells_labels.zarr``), or, with ``image``, the
            OME-Zarr image whose ``labels`` group receives the labels.
        name: labels name (the group name under ``<image>/labels``; shown by napari).
        image: write beside this OME-Zarr image instead of a standalone store.
        scale, units: pixel size and unit per axis letter (e.g. from ``ZarrImage``); 1 when absent.
        overwrite: replace existing labels of the same name / an existing store.
        pyramid: add lower resolution levels when finishing.

    Use ``create`` (once the shape is known), write into ``labels``, then ``finish``; ``discard``
    removes everything written so far.

    Raises:
        FileExistsError: the destination exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | os.PathLike, name: str = "labels", image: str | os.PathLike | None = None,
                 scale: dict[str, float] | None = None, units: dict[str, str] | None = None,
                 overwrite: bool = False, pyramid: bool = True) -> None:
        self.image = Path(image).expanduser() if image is not None else None
        self.name = name
        self.path = self.image / "labels" / name if self.image is not None else Path(path).expanduser()
        self.scale, self.units = dict(scale or {}), dict(units or {})
        self.overwrite, self.pyramid = overwrite, pyramid
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.labels: Any = None
        self.probabilities: Any = None
        self.axes = ""
        self._tmp: Path | None = None
        self._zarr_format = 3

    def create(self, shape: tuple[int, ...], dtype: Any, axes: str, chunks: tuple[int, ...] | None = None,
               probabilities: bool = False, resume_key: str | None = None) -> Any:
        """Create the level-0 array (zeros) under a temporary name; returns it (also ``self.labels``).

        Args:
            shape: labels shape; axes: one letter per dimension (T, Z, Y, X).
            chunks: zarr chunks; default one slice of up to 1024 x 1024.
            probabilities: also create a float32 ``probabilities`` array of the same shape in the
                store (``self.probabilities``; not part of the NGFF labels, which napari shows).
            resume_key: name the temporary folder after this key (a hash of the run's inputs and
                settings) and reuse what an interrupted run with the same key left there.
        """
        import zarr

        if self.image is not None:
            parent = zarr.open_group(str(self.image), mode="r+")
            self._zarr_format = parent.metadata.zarr_format
            parent.require_group("labels")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.part-{resume_key or uuid.uuid4().hex[:8]}"
        self.axes = axes
        if resume_key and (self._tmp / "0").exists():
            # A run with the same key was interrupted: carry on with what it wrote.
            root = zarr.open_group(str(self._tmp), mode="r+")
            self.labels = root["0"]
            self.probabilities = root["probabilities"] if probabilities else None
            if tuple(self.labels.shape) == tuple(shape) and self.labels.dtype == np.dtype(dtype):
                return self.labels
            shutil.rmtree(self._tmp)
        root = zarr.open_group(str(self._tmp), mode="w", zarr_format=self._zarr_format)
        chunks = chunks or (1,) * (len(shape) - 2) + (min(shape[-2], 1024), min(shape[-1], 1024))
        self.labels = root.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        if probabilities:
            self.probabilities = root.create_array("probabilities", shape=shape, chunks=chunks, dtype="float32",
                                                   fill_value=0.0)
        return self.labels

    @property
    def work_path(self) -> Path:
        """The temporary folder being written (exists between ``create`` and ``finish``)."""
        if self._tmp is None:
            raise RuntimeError("LabelStore.create was not called")
        return self._tmp

    def finish(self, metadata: dict[str, Any] | None = None) -> Path:
        """Add the pyramid and NGFF metadata, then move the store into place; returns its path.

        Args:
            metadata: JSON-serialisable settings stored in the labels' attributes (provenance).
        """
        import zarr

        from ome_zarr.format import FormatV04, FormatV05
        from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

        if self._tmp is None:
            raise RuntimeError("LabelStore.create was not called")
        fmt = FormatV05() if self._zarr_format == 3 else FormatV04()
        root = zarr.open_group(str(self._tmp), mode="r+", zarr_format=self._zarr_format)
        factors = self._write_pyramid(root) if self.pyramid else [1]
        letters = self.axes.upper()
        base = [self.scale.get(a, 1.0) for a in letters]
        datasets = [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [
            s * f if a in "YX" else s for s, a in zip(base, letters)]}]} for i, f in enumerate(factors)]
        axes = [dict({"name": a.lower(), "type": _NGFF_TYPES[a]}, **({"unit": self.units[a]} if a in self.units
                                                                     else {})) for a in letters]
        write_multiscales_metadata(root, datasets, fmt=fmt, axes=axes, name=self.name)
        add_metadata(root, {"image-label": {"version": fmt.version, "source": {"image": "../../"} if self.image
                                            else {}}}, fmt=fmt)
        if metadata:
            root.attrs["napari_litenext"] = metadata
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self._tmp, self.path)
        self._tmp = None
        if self.image is not None:
            labels_group = zarr.open_group(str(self.image / "labels"), mode="r+")
            listed = _ome_attrs(labels_group).get("labels", [])
            if self.name not in listed:
                write_label_metadata_list(labels_group, self.name, fmt, write_label_metadata)
        self.labels = zarr.open_array(str(self.path / "0"), mode="r")
        if self.probabilities is not None:
            self.probabilities = zarr.open_array(str(self.path / "probabilities"), mode="r")
        return self.path

    def _write_pyramid(self, root: Any) -> list[int]:
        """Levels 1.. as every second pixel of the previous one, one output chunk at a time.

        Chunk by chunk rather than through dask: memory stays at one chunk of each level whatever
        the size of the stack (a dask graph over a 64-slice stack held hundreds of MB).
        """
        level = root["0"]
        factors = [1]
        while min(level.shape[-2:]) > PYRAMID_MIN_EDGE and len(factors) < 8:
            shape = tuple(level.shape[:-2]) + tuple((n + 1) // 2 for n in level.shape[-2:])
            chunks = (1,) * (len(shape) - 2) + tuple(min(c, n) for c, n in zip(level.chunks[-2:], shape[-2:]))
            target = root.create_array(str(len(factors)), shape=shape, chunks=chunks, dtype=level.dtype,
                                       fill_value=0)
            ch, cw = chunks[-2:]
            for index in np.ndindex(*shape[:-2]):
                for y in range(0, shape[-2], ch):
                    for x in range(0, shape[-1], cw):
                        region = level[index + (slice(2 * y, 2 * (y + ch)), slice(2 * x, 2 * (x + cw)))]
                        target[index + (slice(y, y + ch), slice(x, x + cw))] = region[..., ::2, ::2]
            level = target
            factors.append(factors[-1] * 2)
        return factors

    def discard(self) -> None:
        """Remove what ``create`` and the writes made (the destination is untouched)."""
        if self._tmp is not None and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None


def write_label_metadata_list(labels_group: Any, name: str, fmt: Any, write_label_metadata: Any) -> None:
    """Register ``name`` in ``<image>/labels``'s list (ome-zarr-py also re-tags the labels group)."""
    image_label = dict(_ome_attrs(labels_group[name]).get("image-label", {}))
    image_label.pop("version", None)
    write_label_metadata(labels_group, name, fmt=fmt, **image_label)


def temporary_label_store(shape: tuple[int, ...], dtype: Any, axes: str, folder: str | os.PathLike | None = None,
                          name: str = "labels") -> LabelStore:
    """A ``LabelStore`` created in a new temporary folder (for a zarr-backed napari Labels layer).

    Args:
        shape, dtype, axes: of the labels.
        folder: where to make the temporary folder (default: the system's temporary folder).

    Returns:
        The store, created: write into ``store.labels``; remove ``store.path.parent`` when done.
    """
    parent = Path(tempfile.mkdtemp(prefix="litenext-labels-", dir=folder))
    store = LabelStore(parent / f"{name}.zarr", name=name)
    store.create(tuple(shape), dtype, axes)
    return store


def check_shape(image: ZarrImage) -> None:
    """Refuse zarr arrays that cannot be an image (fewer than 2 dimensions or empty)."""
    if image.array.ndim < 2 or math.prod(image.array.shape) == 0:
        raise InputError(f"{image.path}: holds no 2D image (shape {tuple(image.array.shape)})")
    if np.dtype(image.array.dtype).kind not in "biuf":
        raise InputError(f"{image.path}: pixel type {image.array.dtype} is not supported; store it as integer or float")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
