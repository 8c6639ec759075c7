"""Batch augmentation in torch, run on the training device.

The recipe of the specification: rotation uniform in +-20 degrees, horizontal flip p 0.5, vertical
flip p 0.1, Gaussian blur (kernel 3, 5 or 7) p 0.5. Geometry is applied to image and mask together
with one ``grid_sample`` per batch (rotation and flips folded into one affine matrix per sample);
the blur is one grouped convolution with a 7-tap kernel per sample (identity for unblurred ones).

The optional widening (``AugmentConfig.scale`` ... ``noise``) folds the zoom into the same affine
matrix and applies the colour changes as per-sample 3 x 3 matrices and intensity maps on the
normalised [0, 1] RGB batch (grey images arrive as three equal channels), so a grey fluorescence
patch can come out stained-looking and a stained one grey or inverted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugmentConfig

__all__ = ["AugmentConfig", "augment_batch", "gaussian_taps", "colour_jitter"]

# Optical density of haematoxylin, eosin and DAB in R, G, B (Ruifrok & Johnston 2001), one stain
# per row: the basis in which stain amounts, not colours, are jittered.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def gaussian_taps(kernel_size: int, width: int = 7) -> Tensor:
    """1-D Gaussian of ``kernel_size`` taps, zero-padded to ``width`` taps, summing to 1.

    Sigma follows the usual rule for a given kernel size: 0.3 * ((k - 1) / 2 - 1) + 0.8.
    """
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    taps = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    taps = taps / taps.sum()
    pad = (width - kernel_size) // 2
    return F.pad(taps, (pad, pad))


def augment_batch(images: Tensor, masks: Tensor, config: AugmentConfig, generator: torch.Generator,
                  share: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Augment a batch.

    Args:
        images: N x C x H x W float in [0, 1].
        masks: N x 1 x H x W float in {0, 1}.
        config: what to apply.
        generator: CPU generator for the random draws (seeded for repeatable runs).
        share: ``(start, total)`` when the N pairs are rows ``start`` to ``start + N`` of a batch of
            ``total`` (one process's share in distributed training): the draws are made for the
            whole batch, so the shares of all processes are augmented as one process would augment
            the whole batch.

    Returns:
        Augmented (images, masks); masks stay binary (bilinear resampling, then >= 0.5); with any
        colour change or noise enabled, images stay in [0, 1].
    """
    if not config.enabled:
        return images, masks
    n, c, h, w = images.shape
    device = images.device
    start, total = share if share is not None else (0, n)
    rows = slice(start, start + n)

    def draw() -> Tensor:
        return torch.rand((total,), generator=generator)[rows]

    angle = (draw() * 2 - 1) * math.radians(config.rotate_degrees)
    sx = torch.where(draw() < config.hflip, -1.0, 1.0)
    sy = torch.where(draw() < config.vflip, -1.0, 1.0)
    blur_on = draw() < config.blur
    kernel_idx = torch.randint(len(config.blur_kernels), (total,), generator=generator)[rows]
    zoom = torch.ones(n)
    if config.scale:  # draws only when asked, so recipes without it repeat their old runs exactly
        lo, hi = (math.log(v) for v in config.scale_range)
        zoom = torch.where(draw() < config.scale, torch.exp(lo + (hi - lo) * draw()), zoom)

    if config.rotate_degrees or config.hflip or config.vflip or config.scale:
        # A zoom of s samples a window 1/s as wide: objects come out s times larger.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # grid_sample works in normalised coordinates; for non-square patches a rotation must be
        # done in pixel units, hence the aspect factors.
        aspect = w / h
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = -sin * sy / aspect
        theta[:, 1, 0] = sin * sx * aspect
        theta[:, 1, 1] = cos * sy
        grid = F.affine_grid(theta.to(device, images.dtype), (n, c, h, w), align_corners=False)
        both = torch.cat([images, masks.to(images.dtype)], dim=1)
        both = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        images, masks = both[:, :c], (both[:, c:] >= 0.5).to(masks.dtype)

    if blur_on.any():
        taps = torch.stack([gaussian_taps(config.blur_kernels[int(k)]) if on else _identity_taps()
                            for k, on in zip(kernel_idx, blur_on)])  # N x 7
        taps = taps.to(device, images.dtype).repeat_interleave(c, dim=0)  # N*C x 7
        flat = images.reshape(1, n * c, h, w)
        flat = F.pad(flat, (3, 3, 3, 3), mode="reflect")
        flat = F.conv2d(flat, taps[:, None, None, :], groups=n * c)
        flat = F.conv2d(flat, taps[:, None, :, None], groups=n * c)
        images = flat.reshape(n, c, h, w)
    if c == 3:
        images = colour_jitter(images, config, draw)
    if config.noise:
        on = draw() < config.noise
        std = (draw() * config.noise_std * on).to(device, images.dtype)
        noise = torch.randn((total, c, h, w), generator=generator)[rows].to(device, images.dtype)
        images = (images + noise * std[:, None, None, None]).clamp(0, 1)
    return images, masks


def colour_jitter(images: Tensor, config: AugmentConfig, draw: Callable[[], Tensor]) -> Tensor:
    """The colour part of ``augment_batch``, on N x 3 x H x W images in [0, 1].

    ``draw()`` returns N uniform [0, 1) numbers per call. Each enabled change makes its draws for
    every sample whether or not that sample gets it, so one sample's draws never depend on another's.
    """
    n = images.shape[0]
    device, dtype = images.device, images.dtype

    def per_sample(values: Tensor) -> Tensor:
        return values.to(device, dtype).view(n, 1, 1, 1)

    changed = False
    if config.stain:
        on = (draw() < config.stain)[:, None]
        scale = 1 + (_draw_n(draw, 3) * 2 - 1) * config.stain_sigma * on
        shift = (_draw_n(draw, 3) * 2 - 1) * config.stain_sigma * on
        od = -torch.log(images.clamp(1 / 255, 1))
        hed = torch.einsum("nchw,cd->ndhw", od, _HED_FROM_RGB.to(device, dtype))
        hed = hed * scale.to(device, dtype)[:, :, None, None] + shift.to(device, dtype)[:, :, None, None]
        jittered = torch.exp(-torch.einsum("ndhw,dc->nchw", hed, _RGB_FROM_HED.to(device, dtype)))
        # untouched samples keep their exact pixels (the OD round trip clamps the darkest ones)
        images = torch.where(per_sample(on[:, 0].float()) > 0, jittered, images)
        changed = True
    if config.hue_saturation:
        on = draw() < config.hue_saturation
        angle = (draw() * 2 - 1) * math.radians(config.hue_degrees) * on
        lo, hi = config.saturation_range
        sat = torch.where(on, lo + (hi - lo) * draw(), torch.ones(n))
        grey = torch.full((3, 3), 1 / 3)
        # saturation s moves each colour towards (s < 1) or away from (s > 1) its grey level
        matrix = grey + sat[:, None, None] * (_hue_rotation(angle) - grey)
        images = torch.einsum("nij,njhw->nihw", matrix.to(device, dtype), images)
        changed = True
    if config.greyscale:
        on = per_sample((draw() < config.greyscale).float())
        luma = torch.einsum("c,nchw->nhw", _LUMA.to(device, dtype), images)[:, None]
        images = images * (1 - on) + luma * on
        changed = True
    if config.contrast:
        on = draw() < config.contrast
        lo, hi = config.contrast_range
        factor = torch.where(on, lo + (hi - lo) * draw(), torch.ones(n))
        gamma = torch.where(on, torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * draw()), torch.ones(n))
        shift = (draw() * 2 - 1) * 0.1 * on
        images = ((images - 0.5) * per_sample(factor) + 0.5 + per_sample(shift)).clamp(0, 1) ** per_sample(gamma)
        changed = True
    if config.invert:
        on = per_sample((draw() < config.invert).float())
        images = images * (1 - 2 * on) + on
        changed = True
    return images.clamp(0, 1) if changed else images


def _draw_n(draw: Callable[[], Tensor], k: int) -> Tensor:
    """N x k uniform numbers from ``k`` calls of ``draw``."""
    return torch.stack([draw() for _ in range(k)], dim=1)


def _hue_rotation(angle: Tensor) -> Tensor:
    """N x 3 x 3 rotations of RGB about the grey axis (1, 1, 1) by ``angle`` (radians)."""
    k = 1 / math.sqrt(3)
    cross = torch.tensor([[0.0, -k, k], [k, 0.0, -k], [-k, k, 0.0]])
    outer = torch.full((3, 3), k * k)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    return cos * torch.eye(3) + sin * cross + (1 - cos) * outer


def _identity_taps() -> Tensor:
    taps = torch.zeros(7)
    taps[3] = 1.0
    return taps
