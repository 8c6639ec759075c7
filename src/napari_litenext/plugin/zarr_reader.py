"""napari reader for zarr: plain arrays and OME-Zarr images (all pyramid levels), with their labels.

An OME-Zarr image opens as one multiscale Image layer (napari then reads only the tiles and the
level it shows) with ``scale``, ``units`` and ``axis_labels`` from the NGFF metadata, one layer per
channel along ``C``, plus one Labels layer per NGFF labels group (``<image>/labels/<name>``, as
written by ``napari-litenext predict --into-image``). A standalone labels store
(``<name>_labels.zarr``) opens as a Labels layer; a plain zarr array as an Image layer. Nothing is
read into memory. No torch: napari imports this to open files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["napari_get_zarr_reader", "read_zarr_layers"]

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_zarr_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: ``read_zarr_layers`` for zarr stores, else None (another reader tries)."""
    from ..io.ngff import is_zarr_path

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(os.path.isdir(p) and is_zarr_path(p) for p in paths):
        return None
    return read_zarr_layers


def read_zarr_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Layer data for one or more zarr stores (see the module docstring).

    Raises:
        ImageReadError: a store that is not an image (the message says why).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(_read_one(Path(p)))
    return layers


def _read_one(path: Path) -> list[LayerData]:
    from ..io.ngff import read_zarr

    image = read_zarr(path)
    name = path.name[:-len(".zarr")] if path.name.lower().endswith(".zarr") else path.name
    if not image.ome:
        return [(image.array, {"name": name}, "image")]
    kind = "labels" if image.is_labels else "image"
    layers = [_layer(image, name, kind)]
    for label_name in _label_names(path):
        labels = read_zarr(path / "labels" / label_name)
        layers.append(_layer(labels, f"{name} {label_name}", "labels"))
    return layers


def _label_names(path: Path) -> list[str]:
    import zarr

    folder = path / "labels"
    if not folder.is_dir():
        return []
    try:
        attrs = dict(zarr.open_group(str(folder), mode="r").attrs)
    except Exception:  # a labels folder that is not a zarr group: nothing to show
        return []
    return [str(n) for n in attrs.get("ome", attrs).get("labels", []) if (folder / str(n)).is_dir()]


def _layer(image: Any, name: str, kind: str) -> LayerData:
    axes = image.axes or ""
    spatial = [a for a in axes if a != "C"]
    kwargs: dict[str, Any] = {"name": name, "metadata": {"source": str(image.path), "ome_axes": axes}}
    data = image.levels if len(image.levels) > 1 else image.levels[0]
    if len(image.levels) > 1:
        kwargs["multiscale"] = True
    if axes:
        kwargs["scale"] = tuple(image.scale.get(a, 1.0) for a in spatial)
        kwargs["axis_labels"] = tuple(a.lower() for a in spatial)
        kwargs["units"] = tuple(image.units.get(a, "pixel") for a in spatial)
    if "C" in axes and kind == "image":
        n = image.array.shape[axes.index("C")]
        if n > 1:
            kwargs["channel_axis"] = axes.index("C")
            kwargs["name"] = [f"{name} C{i}" for i in range(n)]
        else:  # one channel: drop the axis lazily (indexing a zarr array would read it)
            import dask.array as da

            data = [da.from_zarr(level)[(slice(None),) * axes.index("C") + (0,)] for level in image.levels]
            data = data if len(data) > 1 else data[0]
    return data, kwargs, kind
