"""Object size: segmenting at the scale a model was trained at, as Cellpose's diameter.

A model whose training nuclei were about 20 px across (``InferenceConfig.trained_object_size``)
sees the 40 px nuclei of an image taken at twice the magnification as something it never learnt.
With ``object_size`` (the typical object diameter in the user's image, or ``"auto"``), ``segment``
resizes every 2D plane by ``scale = trained_object_size / object_size`` (clamped to
[``MIN_SCALE``, ``MAX_SCALE``]) so that the objects appear at the trained size, runs the network
there, resizes the probabilities back to the input's height and width (bilinear) and
post-processes them at the input's size with the caller's threshold, minimum size (still in the
input's pixels), instances and ``adaptive``, then links ids through Z as configured: the labels
have the input's shape.

``"auto"`` first segments at native scale (instances on, whatever the caller asked, to measure
touching objects one by one) and takes the area-weighted median equivalent diameter of the
objects found (``estimate_object_size``). If the scale that gives is within ``AUTO_TOLERANCE`` of
1 (objects within 2x of the trained size) that native result is returned, post-processed as the caller
asked, without a second pass of the network; otherwise the image is segmented again, rescaled.

Where it is not applied. Rescaling needs the rescaled image and its probability map in memory,
so it is not done for inputs and outputs that are meant to stay out of memory: a lazy input whose
outputs would go to a store, outputs written to a store (``out=``), disk-backed outputs
(``workdir``); nor in resize mode, which resizes the whole image to the model's input size anyway,
whatever the objects' size; block-wise runs (``inference.scale``) do not apply it either. There
the image is segmented at native scale and ``settings["object_size"]`` says that object size was
not applied and why, except when the caller passed a number: that raises ``SettingsError``,
since the labels would not be what was asked for. ``"auto"`` and the model's stored value are
only recorded.

Memory: the rescaled input and its probability map hold ``scale**2`` times the input's pixels
(16 times at scale 4) while the network runs; the input-sized map and labels come after.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import Cancelled, SettingsError
from ..progress import Progress
from .layout import MIN_IMAGE_SIZE, arrange
from .lazy import is_lazy
from .postprocess import postprocess_stack
from .resize import resize_bilinear, resize_keep_dtype
from .sink import LARGE_OUTPUT_BYTES
from .stitch import stitch_as_configured

if TYPE_CHECKING:  # pragma: no cover
    from ..config import InferenceConfig
    from .predict import Prediction

__all__ = ["estimate_object_size", "segment_at_object_size", "check_object_size", "object_size_not_applied",
           "AUTO_TOLERANCE", "MIN_SCALE", "MAX_SCALE"]

#: "auto" keeps the native result when the scale it estimates is within [1 / this, this]: a model
#: trained with scale augmentation (0.5-2x) handles that range itself. Chosen on the DSB 2018
#: validation split and the synthetic large-noisy / xl-noisy types (scripts/generalisation.py):
#: 1.25 rescaled in-distribution images needlessly, 2.5 left 70 px nuclei unscaled more often.
AUTO_TOLERANCE = 2.0
#: Limits of the rescaling factor (trained size / object size).
MIN_SCALE, MAX_SCALE = 0.25, 4.0
_WHOLE = (slice(None), slice(None))

SegmentFn = Callable[..., Generator[Progress, None, "Prediction"]]


def estimate_object_size(labels: Any) -> float | None:
    """The area-weighted median equivalent diameter of the objects of a label image or stack, in pixels.

    Each object's diameter is that of the disk of its area, ``sqrt(4 * area / pi)``; each 2D plane
    is measured on its own (an object seen in five slices of a stack counts five times). Weighting
    by area (half of the objects' pixels lie in objects at least this wide) keeps a first pass's
    specks of noise from dragging the estimate down: twenty 3-pixel specks beside four nuclei
    barely move it, while a plain median would report the specks' size.

    Args:
        labels: H x W or ... x H x W; instance ids (0 = background), or a semantic mask (bool, or
            only 0 and 1) whose connected components (4-connected) are the objects. Any real
            dtype holding whole numbers >= 0.

    Returns:
        The area-weighted median diameter over all objects, or None when there is no object.

    Raises:
        ValueError: fewer than 2 dimensions, or values that are negative or not whole numbers.
    """
    array = np.asarray(labels)
    if array.ndim < 2:
        raise ValueError(f"labels must be 2D or a stack of 2D images, got shape {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise ValueError(f"labels must hold object ids (whole numbers >= 0), got dtype {array.dtype}")
        if array.size and (array.min() < 0 or (np.issubdtype(array.dtype, np.floating)
                                               and not np.array_equal(array, np.floor(array)))):
            raise ValueError("labels must hold object ids (whole numbers >= 0); got negative or fractional values")
    semantic = array.dtype == bool or array.max(initial=0) <= 1
    areas = []
    for plane in array.reshape((-1,) + array.shape[-2:]):
        ids = ndi.label(plane > 0)[0] if semantic else plane
        if np.issubdtype(ids.dtype, np.integer) and int(ids.max(initial=0)) <= 4 * ids.size:
            counts = np.bincount(ids.ravel())[1:]  # much faster than sorting every pixel (np.unique)
            areas.append(counts[counts > 0])
        else:  # float ids, or ids so sparse that a count per possible id would not fit
            areas.append(np.unique(ids[ids > 0], return_counts=True)[1])
    found = np.concatenate(areas)
    if not found.size:
        return None
    order = np.argsort(found, kind="stable")
    found = found[order].astype(np.float64)
    half = np.searchsorted(np.cumsum(found), 0.5 * found.sum())
    return float(np.sqrt(4.0 * found[half] / math.pi))


def check_object_size(model: Any, inference: InferenceConfig) -> None:
    """Refuse an object size for a model that does not record the size it was trained at.

    Raises:
        SettingsError: ``inference.object_size`` is set and ``inference.trained_object_size`` is 0.
    """
    if inference.object_size and not inference.trained_object_size:
        raise SettingsError(
            f"model {model.card.name!r} does not record the object size it was trained at; use object size 0 "
            "(off), or a model trained by napari-litenext that records it")


def object_size_not_applied(requested: Any, reason: str, fix: str) -> str:
    """What ``settings["object_size"]`` records where object size cannot be applied.

    Args:
        requested: the ``object_size`` the caller passed (None: the model's value was used).
        reason: why it is not applied, e.g. ``"in block mode"``.
        fix: what the caller can do instead, for the error, e.g. ``"use object size 0 (off)"``.

    Returns:
        ``"not applied <reason>"``.

    Raises:
        SettingsError: the caller passed a number > 0: the labels would not be at that size.
    """
    if requested is not None and str(requested).strip().lower() != "auto" and float(requested) > 0:
        raise SettingsError(f"object_size {requested} cannot be applied {reason}; {fix}")
    return f"not applied {reason}"


def segment_at_object_size(segment: SegmentFn, image: Any, model: Any, inference: InferenceConfig,
                           requested: Any, options: dict[str, Any]) -> Generator[Progress, None, Prediction]:
    """``segment`` with ``inference.object_size`` set: rescale, segment, back to the input's size.

    Args:
        segment: ``inference.predict.segment`` (called with ``object_size=0`` for each pass).
        image, model: as ``segment``.
        inference: the resolved settings (``object_size`` not 0).
        requested: the ``object_size`` the caller passed (None: the model's value).
        options: ``segment``'s other keyword arguments as the caller gave them (``axes``,
            ``channel``, ``threshold``, ..., ``workdir``, ``out``, ``value_range``).

    Yields:
        The passes' ``Progress``, then ``"rescale"`` and ``"postprocess"`` steps.

    Returns:
        The ``Prediction``, of the input's shape; ``settings["object_size"]`` is the given or
        estimated diameter in pixels and ``settings["scale"]`` the factor the image was resized
        by (1.0: native), or ``settings["object_size"]`` says why it was not applied.

    Raises:
        SettingsError: the model records no trained object size; a number was given for an input
            it cannot be applied to (module docstring). Otherwise as ``segment``.
    """
    check_object_size(model, inference)
    native = dict(options, object_size=0)
    layout = arrange(image, options.get("axes"), options.get("channel"))
    reason, fix = _not_applicable(layout, inference, options)
    if reason:
        note = object_size_not_applied(requested, reason, fix)
        prediction = yield from segment(image, model, **native)
        prediction.settings["object_size"] = note
        return prediction
    if is_lazy(layout.source):  # small enough to hold: read it once
        layout = arrange(np.asarray(layout.source), layout.axes, options.get("channel"))
        image = layout.source
    value_range = options.get("value_range") or layout.intensity_range(inference)
    native.update(value_range=value_range)
    size = inference.object_size
    if size == "auto":
        first = yield from segment(image, model, **dict(native, instances=True))
        size = estimate_object_size(first.labels)
        if size is None or 1.0 / AUTO_TOLERANCE <= inference.trained_object_size / size <= AUTO_TOLERANCE:
            return (yield from _as_asked(first, layout.stack_axes, inference, options.get("should_stop"), size))
    scale = min(MAX_SCALE, max(MIN_SCALE, inference.trained_object_size / size))
    height = max(MIN_IMAGE_SIZE, round(layout.height * scale))
    width = max(MIN_IMAGE_SIZE, round(layout.width * scale))
    if (height, width) == (layout.height, layout.width):
        prediction = yield from segment(image, model, **native)
        prediction.settings.update(_recorded(size, 1.0, inference))
        return prediction
    rescaled = yield from _rescale(layout, height, width)
    # The labels of this pass are not kept (those at the input's size are made below), so it
    # post-processes as cheaply as it can: a 0/1 mask, ids neither split nor linked.
    inner = yield from segment(rescaled, model, **dict(
        native, axes=layout.stack_axes + "YX" + ("C" if rescaled.ndim > len(layout.stack_shape) + 2 else ""),
        channel=None, instances=False, adaptive=False, min_size=round(inference.min_size * scale ** 2)))
    del rescaled
    probabilities = np.empty(layout.stack_shape + (layout.height, layout.width), np.float32)
    for small, big in zip(_planes(inner.probabilities), _planes(probabilities)):
        resize_bilinear(small, layout.height, layout.width, out=big)
    np.clip(probabilities, 0.0, 1.0, out=probabilities)
    settings = dict(inner.settings, axes=layout.stack_axes + "YX", input_axes=layout.axes,
                    channel=options.get("channel"), **_recorded(size, scale, inference))
    settings.pop("stitch_threshold", None)
    del inner
    prediction = yield from _labelled(probabilities, layout.stack_axes, inference, options.get("should_stop"),
                                      settings)
    return prediction


def _not_applicable(layout: Any, inference: InferenceConfig, options: dict[str, Any]) -> tuple[str, str]:
    """Why the image cannot be rescaled and what to do instead; ("", "") when it can."""
    off = "use object size 0 (off)"
    if inference.mode == "resize":
        return ("in resize mode (the whole image is resized to the model's input size, whatever the objects' "
                "size)", f"{off}, or mode tile")
    if options.get("out") is not None:
        return "to outputs written to a zarr store", f"{off}, or segment into memory (no labels store)"
    if options.get("workdir") is not None:
        return "to disk-backed outputs", f"{off}, or segment in memory (no workdir, no --low-memory)"
    if is_lazy(layout.source):
        pixels = math.prod(layout.stack_shape) * layout.height * layout.width
        if pixels * (4 + (4 if inference.instances else 1)) > LARGE_OUTPUT_BYTES:
            return "to a lazy input too large to hold in memory", f"{off}, or rescale the image beforehand"
    return "", ""


def _recorded(size: Any, scale: float, inference: InferenceConfig) -> dict[str, Any]:
    out = {"object_size": size, "scale": scale, "adaptive": inference.adaptive}
    if inference.object_size == "auto":
        out["object_size_estimated"] = True
    return out


def _planes(array: np.ndarray) -> np.ndarray:
    return array.reshape((-1,) + array.shape[-2:])


def _rescale(layout: Any, height: int, width: int) -> Generator[Progress, None, np.ndarray]:
    """Every 2D plane of ``layout.pixels`` (channels kept) resized to height x width, in its dtype."""
    stack = layout.stack_shape
    planes = list(np.ndindex(*stack)) if stack else [()]
    out = None
    for done, index in enumerate(planes, 1):
        plane = resize_keep_dtype(np.asarray(layout.pixels[index + _WHOLE]), height, width)
        if out is None:
            out = np.empty(stack + plane.shape, plane.dtype)
        out[index] = plane
        yield Progress("rescale", done, len(planes), f"rescaled {done}/{len(planes)}")
    return out


def _labelled(probabilities: np.ndarray, stack_axes: str, inference: InferenceConfig,
              should_stop: Callable[[], bool] | None,
              settings: dict[str, Any]) -> Generator[Progress, None, Prediction]:
    """Labels of ``probabilities`` with the caller's settings, stopping when asked; the ``Prediction``."""
    from .predict import Prediction

    labels = np.zeros(probabilities.shape, np.int32 if inference.instances else np.uint8)
    total = len(_planes(probabilities))
    for index in postprocess_stack(probabilities, labels, inference.threshold, inference.instances,
                                   inference.min_size, adaptive=inference.adaptive):
        if should_stop is not None and should_stop():
            raise Cancelled("segmentation cancelled")
        yield Progress("postprocess", index + 1, total, f"post-processed {index + 1}/{total}")
    if stitch_as_configured(labels, stack_axes, inference):
        settings["stitch_threshold"] = inference.stitch_threshold
    settings.update(instances=inference.instances, min_size=inference.min_size, adaptive=inference.adaptive)
    return Prediction(probabilities, labels, settings)


def _as_asked(first: Prediction, stack_axes: str, inference: InferenceConfig, should_stop: Callable[[], bool] | None,
              size: float | None) -> Generator[Progress, None, Prediction]:
    """The native "auto" pass (made with instances) as the caller asked for it: semantic labels when so."""
    settings = dict(first.settings, **_recorded(size, 1.0, inference))  # size None: no object found
    if inference.instances:
        first.settings = settings
        return first
    settings.pop("stitch_threshold", None)
    return (yield from _labelled(first.probabilities, stack_axes, inference, should_stop, settings))
