"""From an array and its axes to what ``segment`` works on: stack axes first, then Y, X, the channel chosen.

``arrange`` checks the axes and the channel once, for ``segment`` and for block-wise runs
(``inference.scale``) alike: a numpy image becomes a view, a lazy one a ``lazy.Arranged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InferenceConfig
from ..errors import InputError
from .lazy import Arranged, as_source, is_lazy, lazy_intensity_range
from .preprocess import intensity_range, select_channels

__all__ = ["Layout", "arrange", "infer_axes", "MIN_IMAGE_SIZE"]

#: Smallest height and width accepted (the network's minimum).
MIN_IMAGE_SIZE = 16
_AXIS_ALIASES = {"S": "C"}


@dataclass
class Layout:
    """An image arranged for segmentation.

    Attributes:
        source: the input (numpy, memory map or lazy array), unchanged.
        axes: its axes (checked or inferred); stack_axes: the T/Z letters among them.
        order: source axis of each arranged axis (stack axes, Y, X, [C]).
        channel_key: how the channel axis is indexed (int, slice of RGB, or None).
        stack_shape, height, width: the output's geometry (labels shape = stack_shape + (H, W)).
        pixels: numpy view or ``Arranged`` indexed ``pixels[stack index + (y slice, x slice)]``.
    """

    source: Any
    axes: str
    stack_axes: str
    order: list[int]
    channel_key: Any
    stack_shape: tuple[int, ...]
    height: int
    width: int
    pixels: Any

    def intensity_range(self, inference: InferenceConfig) -> tuple[float, float]:
        """The normalisation range of the whole image (bounded reads for a lazy one)."""
        if isinstance(self.pixels, Arranged):
            return lazy_intensity_range(self.pixels, inference)
        return intensity_range(self.pixels, inference)


def arrange(image: Any, axes: str | None, channel: int | None) -> Layout:
    """Check ``image``, its ``axes`` (inferred when None) and ``channel``; see ``segment``.

    Raises:
        InputError: too few dimensions, unknown axes, smaller than 16 x 16, empty, a channel out
            of range or needed but not given.
    """
    image = as_source(image)
    if image.ndim < 2:
        raise InputError(f"expected an image with at least 2 dimensions (Y, X), got shape {image.shape}")
    axes = _check_axes(axes, image.shape) if axes is not None else infer_axes(image.shape, channel)
    has_c = "C" in axes
    stack_axes = "".join(a for a in axes if a not in "CYX")
    order = [axes.index(a) for a in stack_axes + "YX" + ("C" if has_c else "")]
    shape = tuple(int(image.shape[i]) for i in order)  # stack axes, Y, X, [C]
    stack_shape = shape[:len(stack_axes)]
    height, width = shape[len(stack_axes):len(stack_axes) + 2]
    if height < MIN_IMAGE_SIZE or width < MIN_IMAGE_SIZE:
        raise InputError(f"image is {height} x {width} pixels (axes {axes}, shape {image.shape}); "
                         f"segmentation needs at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}")
    if math.prod(shape) == 0:
        raise InputError(f"image is empty (shape {image.shape})")
    select_channels(np.zeros((1, 1) + shape[len(stack_axes) + 2:], image.dtype), channel)  # validates the choice
    key = _channel_key(shape[-1] if has_c else 0, has_c, channel)
    if is_lazy(image):
        pixels: Any = Arranged(image, order, key)
    else:
        pixels = _channel_view(image.transpose(order), has_c, channel)  # a view
    return Layout(image, axes, stack_axes, order, key, stack_shape, height, width, pixels)


def infer_axes(shape: tuple[int, ...], channel: int | None = None) -> str:
    """The axes ``predict`` assumes for an array of ``shape`` when none are given.

    ===================================  ======
    shape                                axes
    ===================================  ======
    (Y, X)                               YX
    (Y, X, 3 or 4)                       YXC
    (Y, X, c < 16), ``channel`` given    YXC
    (c < 16, Y, X), ``channel`` given    CYX
    (Z, Y, X) otherwise                  ZYX
    (Z, Y, X, 3 or 4)                    ZYXC
    (Z, Y, X, c < 16), ``channel`` given ZYXC
    ===================================  ======

    Raises:
        InputError: any other shape; the message asks for ``axes=`` or ``channel=``.
    """
    ndim = len(shape)
    if ndim == 2:
        return "YX"
    last = shape[-1] if ndim else 0
    if ndim == 3:
        if last in (3, 4) or (channel is not None and last < MIN_IMAGE_SIZE):
            return "YXC"
        if last < MIN_IMAGE_SIZE:
            raise InputError(f"image of shape {shape} looks like {last} channels: choose one with "
                             f"channel=<0..{last - 1}> (--channel), or give axes= (--axes), e.g. 'ZYX'")
        if channel is not None and shape[0] < MIN_IMAGE_SIZE:
            return "CYX"
        return "ZYX"
    if ndim == 4 and (last in (3, 4) or (channel is not None and last < MIN_IMAGE_SIZE)):
        return "ZYXC"
    if ndim < 2:
        raise InputError(f"expected an image with at least 2 dimensions (Y, X), got shape {shape}")
    raise InputError(f"cannot tell the axes of a {ndim}-D image of shape {shape}: give axes= "
                     "(--axes) with one letter per dimension from T, Z, C, Y, X, e.g. 'ZCYX' or 'TZYX'")


def _check_axes(axes: str, shape: tuple[int, ...]) -> str:
    text = "".join(_AXIS_ALIASES.get(a, a) for a in str(axes).strip().upper())
    if len(text) != len(shape):
        raise InputError(f"axes={axes!r} has {len(text)} letters but the image has {len(shape)} "
                         f"dimensions (shape {shape}); give one letter per dimension")
    bad = sorted(set(text) - set("TZCYX"))
    if bad:
        raise InputError(f"axes={axes!r} has unknown letter(s) {''.join(bad)}; use T, Z, C, Y, X")
    if len(set(text)) != len(text):
        raise InputError(f"axes={axes!r} repeats a letter; each of T, Z, C, Y, X may appear once")
    if "Y" not in text or "X" not in text:
        raise InputError(f"axes={axes!r} must contain Y and X")
    return text


def _channel_view(array: np.ndarray, has_channels: bool, channel: int | None) -> np.ndarray:
    """The pixels that are segmented (a view): the chosen channel, or RGB without alpha."""
    if not has_channels:
        return array
    n = array.shape[-1]
    if channel is not None:
        return array[..., channel]
    if n == 1:
        return array[..., 0]
    return array[..., :3]


def _channel_key(n: int, has_channels: bool, channel: int | None) -> int | slice | None:
    """How ``_channel_view`` indexes the channel axis, for a lazy view."""
    if not has_channels:
        return None
    if channel is not None:
        return channel % n
    return 0 if n == 1 else slice(0, 3)
