"""Test tensors and cover image of a package, and the package's pre-processing in numpy.

A package's input is the raw image (values as stored), so that its pre-processing can reproduce
the model's normalisation: ``normalise`` computes exactly the steps the package declares
(scale_range over channel, y and x together, or scale_linear by the dtype's range; then clip to
[0, 1] and optionally invert), which the tests compare with ``inference.preprocess``.
"""

from __future__ import annotations

import numpy as np

from ..config import InferenceConfig
from ..errors import InputError

__all__ = ["DTYPE_GAIN", "SCALE_RANGE_EPS", "input_dtype", "make_test_input", "synthetic_image", "normalise",
           "cover_image"]

#: scale_linear gain of the "dtype" normalisation per input data type (floats are only clipped).
DTYPE_GAIN = {"uint8": 1.0 / 255.0, "uint16": 1.0 / 65535.0, "float32": 1.0}
#: eps of scale_range (added to high - low): tiny, so that the result equals the package's
#: division by (high - low) to float32 precision, yet a constant image still maps to 0 as there.
SCALE_RANGE_EPS = 1e-10
#: Largest test image edge in tile mode: large enough to show a few objects, small enough that
#: the zoo's test (which also runs larger sizes) stays quick.
_MAX_TEST_EDGE = 256


def input_dtype(image: np.ndarray) -> str:
    """The package's input data type for a raw test image: ``uint8``, ``uint16`` or ``float32``.

    Raises:
        InputError: any other dtype (give a uint8, uint16 or float image).
    """
    if image.dtype in (np.uint8, np.uint16):
        return str(image.dtype)
    if np.issubdtype(image.dtype, np.floating):
        return "float32"
    raise InputError(f"test image has dtype {image.dtype}; give a uint8, uint16 or float image "
                     "(the BioImage Model Zoo describes one input type per package)")


def synthetic_image(inference: InferenceConfig, size: int, seed: int = 0) -> np.ndarray:
    """A size x size stand-in test image, for models exported without one of their own images.

    Tile-mode models (many small objects at native resolution, e.g. nuclei) get bright blurred
    disks on a dark background, grey; resize-mode models (one large object per image, e.g. a skin
    lesion) get one dark irregular blob on a skin-coloured background, RGB. Typed as the model's
    data would be: uint8 for the "dtype" normalisation, else float32 camera counts (about
    100-4100). ``invert`` models get the intensities flipped.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    if inference.mode == "tile":
        objects = np.zeros((size, size))
        for _ in range(max(3, size // 24)):
            cy, cx = rng.uniform(0.1, 0.9, 2)
            radius = rng.uniform(0.04, 0.12)
            objects[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = rng.uniform(0.6, 1.0)
        image = (ndi.gaussian_filter(objects, max(1.0, size / 128)) * 0.8 + 0.1)[..., None]
    else:
        angle = np.arctan2(yy - 0.5, xx - 0.5)
        radius = 0.28 + 0.04 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.03 * np.sin(5 * angle)
        lesion = ndi.gaussian_filter((np.hypot(yy - 0.5, xx - 0.5) <= radius).astype(float), size / 64)
        skin, brown = np.array([0.86, 0.70, 0.62]), np.array([0.45, 0.27, 0.20])
        image = skin + lesion[..., None] * (brown - skin)
    image = np.clip(image + rng.normal(0.0, 0.03, image.shape), 0.0, 1.0)
    image = 1.0 - image if inference.invert else image
    image = image[..., 0] if image.shape[-1] == 1 else image
    if inference.normalisation == "dtype":
        return np.round(image * 255).astype(np.uint8)
    return (100 + 4000 * image).astype(np.float32)


def make_test_input(image: np.ndarray, inference: InferenceConfig, channels: int) -> np.ndarray:
    """A 1 x C x H x W test tensor from a raw H x W (grey) or H x W x 3/4 (RGB/RGBA) image.

    Grey is replicated to the C channels. H and W become multiples of 16: resize-mode models get
    the image resized to ``input_size`` (what they see in napari-litenext), tile-mode models a
    central crop of at most 256 pixels.

    Raises:
        InputError: the image is not 2D grey or RGB(A), smaller than 16 x 16, or of another dtype.
    """
    image = np.asarray(image)
    dtype = input_dtype(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, :3]
    elif image.ndim != 2:
        raise InputError(f"test image has shape {image.shape}; give a 2D grey (H x W) or RGB (H x W x 3) image")
    if min(image.shape[:2]) < 16:
        raise InputError(f"test image is {image.shape[0]} x {image.shape[1]} pixels; give at least 16 x 16")
    if inference.mode == "resize":
        image = _resize(image, inference.input_size)
    else:
        height, width = (min(_MAX_TEST_EDGE, n - n % 16) for n in image.shape[:2])
        top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
        image = image[top:top + height, left:left + width]
    planes = image.transpose(2, 0, 1) if image.ndim == 3 else np.broadcast_to(image, (channels,) + image.shape)
    if planes.shape[0] != channels:
        raise InputError(f"test image has {planes.shape[0]} channels but the model reads {channels}")
    return np.ascontiguousarray(planes[None]).astype(dtype, copy=False)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(image.astype(np.float64), (size, size) + image.shape[2:], order=1, mode="edge",
                 anti_aliasing=False)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(image.dtype)


def normalise(raw: np.ndarray, inference: InferenceConfig) -> np.ndarray:
    """The package's pre-processing of a raw N x C x H x W tensor: float32 in [0, 1].

    Each sample is scaled on its own, over its channels and pixels together (colour balance kept),
    as napari-litenext normalises an image.
    """
    out = np.empty(raw.shape, np.float32)
    for i, sample in enumerate(np.asarray(raw)):
        x = sample.astype(np.float32)
        if inference.normalisation == "dtype":
            x *= np.float32(DTYPE_GAIN[input_dtype(sample)])
        else:
            q = (0.0, 100.0) if inference.normalisation == "minmax" else inference.percentiles
            lo, hi = (np.float32(v) for v in np.percentile(x, q))
            x = (x - lo) / (hi - lo + np.float32(SCALE_RANGE_EPS))
        np.clip(x, 0.0, 1.0, out=x)
        out[i] = 1.0 - x if inference.invert else x
    return out


def cover_image(network_input: np.ndarray, probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """A 2:1 cover: the normalised test input, and beside it the same with the predicted mask.

    Args:
        network_input: C x H x W float in [0, 1] (grey or RGB).
        probabilities: H x W foreground probabilities.
        threshold: the model's threshold; the mask is tinted magenta with a white outline.

    Returns:
        uint8 H' x 2W' x 3, upscaled (nearest) so that it is at least 256 pixels tall.
    """
    from scipy import ndimage as ndi

    rgb = network_input[:3] if network_input.shape[0] >= 3 else np.repeat(network_input[:1], 3, axis=0)
    left = np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0)
    mask = probabilities > threshold
    tinted = np.where(mask[..., None], 0.5 * left + 0.5 * np.array([1.0, 0.0, 1.0]), left)
    tinted[mask & ~ndi.binary_erosion(mask)] = 1.0
    cover = np.concatenate([left, tinted], axis=1)
    scale = max(1, -(-256 // cover.shape[0]))
    cover = cover.repeat(scale, axis=0).repeat(scale, axis=1)
    return np.round(cover * 255).astype(np.uint8)
