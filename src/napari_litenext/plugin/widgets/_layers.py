"""From napari layer data to what the cores take, and back; no Qt here, so it is testable headless.

* ``training_samples``: Image + Labels pairs (2D, RGB, or stacks slice by slice) to ``data.Sample``.
* ``output_geometry``: the scale and translate an output layer needs to sit on its image.
* ``full_resolution``: the array behind a (possibly multiscale) layer.
* ``layer_axes``: the axes napari displays, as ``predict`` names them.
* ``default_output_dir``: a fresh, never-existing folder for a training run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...training.data import DataError, Sample, samples_from_arrays

__all__ = ["layer_axes", "LayerPair", "training_samples", "output_geometry", "full_resolution", "default_output_dir",
           "label_planes", "crop_to_painted"]


@dataclass
class LayerPair:
    """An Image layer's data with the Labels painted on it.

    Attributes:
        image: the image array (numpy, dask, zarr...), H x W, H x W x C (``rgb``) or a stack
            Z x H x W [x C].
        labels: the Labels layer's array: H x W, or Z x H x W for a stack.
        rgb: True when the image's last axis holds colour channels (napari's ``layer.rgb``).
        name: for messages, e.g. ``"cells / cells labels"``.
    """

    image: Any
    labels: Any
    rgb: bool = False
    name: str = "pair"


def layer_axes(ndim: int, rgb: bool) -> str:
    """The axes of a napari Image layer's data as ``prediction.segment`` names them.

    napari shows the last two (non-colour) axes as Y, X and everything before them as sliders, so
    leading axes are stacks: ``YX``, ``ZYX``, ``TZYX`` (``...C`` for RGB layers). Saying so
    explicitly keeps ``segment`` from guessing channels in, e.g., a 3-slice stack.

    Raises:
        ValueError: fewer than two or more than four non-colour axes.
    """
    spatial = ndim - (1 if rgb else 0)
    if spatial < 2:
        raise ValueError(f"the image has {spatial} dimension(s); segmentation needs at least Y and X")
    if spatial > 4:
        raise ValueError(f"the image has {spatial} dimensions; the widget segments 2D images and stacks of up to "
                         "two slider axes (T, Z): remove an axis (e.g. Layers > Split Stack) or use the Python API")
    return "TZYX"[4 - spatial:] + ("C" if rgb else "")


def full_resolution(data: Any, multiscale: bool = False) -> Any:
    """The full-resolution level of a layer's data (the first level when ``multiscale``)."""
    return data[0] if multiscale else data


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def crop_to_painted(image: np.ndarray, mask: np.ndarray, min_edge: int, margin: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The part of a pair around its painted pixels, at least ``min_edge`` wide where the image allows.

    A user who paints a few objects in a corner of a large image has not said that the rest is
    background; cropping keeps training from learning that unpainted objects are background.

    Args:
        image: H x W or H x W x C.
        mask: H x W labels (> 0 painted); must hold at least one painted pixel.
        min_edge: smallest crop edge (the training patch size).
        margin: pixels kept around the painted box; default ``min_edge // 4``.
    """
    ys, xs = np.nonzero(mask)
    margin = min_edge // 4 if margin is None else margin
    box = []
    for lo, hi, size in ((ys.min(), ys.max() + 1, mask.shape[0]), (xs.min(), xs.max() + 1, mask.shape[1])):
        lo, hi = max(0, int(lo) - margin), min(size, int(hi) + margin)
        if hi - lo < min_edge:  # grow symmetrically, then shift inside the image
            grow = min_edge - (hi - lo)
            lo = max(0, lo - grow // 2)
            hi = min(size, lo + min_edge)
            lo = max(0, hi - min_edge)
        box.append(slice(lo, hi))
    return image[box[0], box[1]], mask[box[0], box[1]]


def label_planes(image: np.ndarray, labels: np.ndarray, rgb: bool, name: str
                 ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Split a pair into 2D (image, labels, name) planes, slice by slice for stacks.

    Slices of a stack whose labels are empty are left out (not painted yet); a 2D pair with empty
    labels is an error.

    Raises:
        DataError: dimensions or sizes that do not match (with both shapes), or nothing painted.
    """
    spatial = image.ndim - (1 if rgb else 0)
    image_yx = image.shape[spatial - 2:spatial]
    if labels.ndim not in (2, 3) or spatial not in (2, 3):
        raise DataError(f"{name}: train on 2D images or stacks of 2D slices; got image "
                        f"{_shape_text(image.shape)}{' (RGB)' if rgb else ''} and labels {_shape_text(labels.shape)}")
    if tuple(labels.shape[-2:]) != tuple(image_yx):
        raise DataError(f"{name}: image is {_shape_text(image_yx)} pixels but labels are "
                        f"{_shape_text(labels.shape[-2:])}; paint labels on a Labels layer made for this image")
    if spatial == 3 and labels.ndim == 2:
        raise DataError(f"{name}: the image is a stack of {image.shape[0]} slices but the labels are 2D; "
                        "make the Labels layer with the image's shape (Layers > New Labels Layer)")
    if spatial == 2 and labels.ndim == 3:
        raise DataError(f"{name}: the labels are a stack of {labels.shape[0]} slices but the image is 2D; "
                        "choose the matching image")
    if spatial == 2:
        if not np.any(labels):
            raise DataError(f"{name}: the labels are empty; paint some objects first")
        return [(image, labels, name)]
    if labels.shape[0] != image.shape[0]:
        raise DataError(f"{name}: the image has {image.shape[0]} slices but the labels have {labels.shape[0]}")
    planes = [(image[i], labels[i], f"{name} [slice {i}]") for i in range(labels.shape[0]) if np.any(labels[i])]
    if not planes:
        raise DataError(f"{name}: the labels are empty in every slice; paint some objects first")
    return planes


def training_samples(pairs: Sequence[LayerPair], crop_min_edge: int | None = None) -> list[Sample]:
    """Training samples from layer pairs; foreground is ``labels > 0`` (instance or semantic labels).

    Args:
        pairs: one or more image/labels pairs.
        crop_min_edge: when given, each plane is cropped to its painted area (``crop_to_painted``)
            with crops at least this many pixels wide.

    Raises:
        DataError: no pairs, mismatched shapes, empty labels (message names the pair and fix).
    """
    if not pairs:
        raise DataError("no training pairs: choose an Image layer and the Labels layer painted on it")
    images, masks, names = [], [], []
    for pair in pairs:
        image = np.asarray(pair.image)
        labels = np.asarray(pair.labels)
        for plane, lab, name in label_planes(image, labels, pair.rgb, pair.name):
            if crop_min_edge is not None:
                plane, lab = crop_to_painted(plane, lab, crop_min_edge)
            images.append(plane)
            masks.append(lab)
            names.append(name)
    return samples_from_arrays(images, masks, names=names)


def output_geometry(scale: Sequence[float], translate: Sequence[float], rgb: bool, input_axes: str,
                    output_axes: str) -> tuple[list[float], list[float]]:
    """Scale and translate for an output layer so that it overlays its image exactly.

    Args:
        scale, translate: the image layer's (one entry per napari dimension; an RGB layer has no
            entry for its colour axis).
        rgb: the image layer is RGB(A).
        input_axes: ``Prediction.settings["input_axes"]``: one letter per axis of the image data.
        output_axes: ``Prediction.settings["axes"]``: one letter per axis of the output.
    """
    full_scale, full_translate = list(scale), list(translate)
    if rgb:
        full_scale.append(1.0)
        full_translate.append(0.0)
    if len(full_scale) != len(input_axes):
        # napari padded or the axes were given differently: keep the trailing (Y, X) geometry.
        n = len(output_axes)
        return [float(s) for s in list(scale)[-n:]], [float(t) for t in list(translate)[-n:]]
    index = [input_axes.index(a) for a in output_axes]
    return [float(full_scale[i]) for i in index], [float(full_translate[i]) for i in index]


def _safe_name(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    return text or "model"


def default_output_dir(root: str | Path, name: str, now: float | None = None) -> Path:
    """``root/<name>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... appended if that already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = Path(root).expanduser() / f"{_safe_name(name)}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
