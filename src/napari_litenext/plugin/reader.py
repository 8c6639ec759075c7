"""napari reader for OME-TIFF files: axes, channels and physical pixel sizes from the OME metadata.

napari's built-in TIFF reader returns the pixel array alone, so a 2-channel z-stack opens as one
4-D grey layer with unit pixel size. This reader claims only ``*.ome.tif`` / ``*.ome.tiff`` and
only files that really carry OME-XML (otherwise it declines and napari falls back to its built-in
reader). It returns one Image layer per OME image (tifffile series), split into one layer per
channel along ``C``, RGB kept as RGB, singleton axes dropped, and ``scale``, ``units`` and
``axis_labels`` set from ``PhysicalSize{X,Y,Z}`` and ``TimeIncrement``.

Series stored uncompressed in one block are memory-mapped rather than read, so files larger than
memory open at once and napari reads the planes it shows; compressed or tiled series are read into
memory (pyramids: full resolution only), and very large ones are better opened with a dedicated
OME-Zarr / bioformats reader. Several files give layers per file; they are not stacked into one
layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["napari_get_reader", "read_ome_tiff", "OME_SUFFIXES"]

OME_SUFFIXES = (".ome.tif", ".ome.tiff")

LayerData = tuple[Any, dict[str, Any], str]

# OME's default unit for physical sizes and time increments when the attribute is absent.
_DEFAULT_UNITS = {"X": "µm", "Y": "µm", "Z": "µm", "T": "s"}
_SIZE_ATTRS = {"X": "PhysicalSizeX", "Y": "PhysicalSizeY", "Z": "PhysicalSizeZ", "T": "TimeIncrement"}
_UNIT_ATTRS = {"X": "PhysicalSizeXUnit", "Y": "PhysicalSizeYUnit", "Z": "PhysicalSizeZUnit",
               "T": "TimeIncrementUnit"}


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: ``read_ome_tiff`` if every path is an OME-TIFF with OME-XML, else None.

    Args:
        path: one path or a list of paths, as napari passes them.

    Returns:
        A function napari calls with the same ``path`` to get layer data, or None to let another
        reader (napari's built-in TIFF reader) handle the file.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_is_ome_tiff(p) for p in paths):
        return None
    return read_ome_tiff


def read_ome_tiff(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Read one or more OME-TIFF files as napari Image layer data.

    Args:
        path: a file or a list of files.

    Returns:
        ``(data, kwargs, "image")`` tuples. ``kwargs`` holds ``name``, ``scale``, ``units``,
        ``axis_labels`` and, when the image has several channels, ``channel_axis`` (napari then
        makes one layer per channel, named after the OME channel names) or ``rgb=True`` for
        interleaved RGB(A).

    Raises:
        ValueError: if a file has no OME-XML or an image without Y and X axes.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(_read_one(Path(p)))
    return layers


def _is_ome_tiff(path: str | os.PathLike) -> bool:
    name = os.fspath(path).lower()
    if not name.endswith(OME_SUFFIXES) or not os.path.isfile(path):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.is_ome and tif.ome_metadata)
    except Exception:  # not a readable TIFF: let napari's own reader report it
        return False


def _read_one(path: Path) -> list[LayerData]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not (tif.is_ome and tif.ome_metadata):
            raise ValueError(f"{path} carries no OME-XML metadata; open it with napari's built-in reader")
        images = _as_list(tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image"))
        stem = path.name[: -len(".ome.tiff")] if path.name.lower().endswith(".tiff") else path.name[:-len(".ome.tif")]
        out = []
        for index, series in enumerate(tif.series):
            pixels = images[index].get("Pixels", {}) if index < len(images) else {}
            name = stem if len(tif.series) == 1 else f"{stem} [{series.name or index}]"
            out.append(_layer_data(_pixels(tif, series), series.axes.upper(), pixels, name, path))
        return out


def _pixels(tif: Any, series: Any) -> Any:
    """The series' pixels: a read-only memory map when stored in one uncompressed block, else read."""
    from ..io.images import map_tiff_series

    mapped = map_tiff_series(tif, series)
    return mapped if mapped is not None else series.asarray()


def _layer_data(data: Any, axes: str, pixels: dict[str, Any], name: str, path: Path) -> LayerData:
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: image axes {axes!r} have no Y and X; it is not an image napari can show")
    kwargs: dict[str, Any] = {"metadata": {"ome_axes": axes, "source": str(path)}}
    channel_names = [c.get("Name") for c in _as_list(pixels.get("Channel"))]

    # Samples (S) of size 3/4 last are RGB(A); any other S axis is a channel axis in disguise.
    if axes.endswith("S") and data.shape[-1] in (3, 4):
        kwargs["rgb"] = True
    elif "S" in axes:
        axes = axes.replace("S", "C") if "C" not in axes else axes

    spatial = [a for a in axes if not (a == "C" or (a == "S" and kwargs.get("rgb")))]
    scale, units = [], []
    for axis in spatial:
        size = pixels.get(_SIZE_ATTRS.get(axis, ""), None)
        if isinstance(size, (int, float)) and size > 0:
            scale.append(float(size))
            units.append(str(pixels.get(_UNIT_ATTRS[axis], _DEFAULT_UNITS[axis])))
        else:
            scale.append(1.0)
            units.append("pixel")
    kwargs["scale"] = tuple(scale)
    kwargs["units"] = tuple(units)
    kwargs["axis_labels"] = tuple(a.lower() for a in spatial)

    if "C" in axes and data.shape[axes.index("C")] > 1:
        c = axes.index("C")
        kwargs["channel_axis"] = c
        n = data.shape[c]
        names = [str(cn) if cn else f"C{i}" for i, cn in enumerate(channel_names[:n])]
        names += [f"C{i}" for i in range(len(names), n)]
        kwargs["name"] = [f"{name} {cn}" for cn in names]
    else:
        if "C" in axes:  # a single channel: drop the axis so scale and labels line up
            data = data[(slice(None),) * axes.index("C") + (0,)]  # a view: keeps a memory map lazy
        kwargs["name"] = f"{name} {channel_names[0]}" if len(channel_names) == 1 and channel_names[0] else name
    return data, kwargs, "image"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
