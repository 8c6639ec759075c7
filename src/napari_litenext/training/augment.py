"""Batch augmentation in torch, run on the training device.

The recipe of the specification: rotation uniform in +-20 degrees, horizontal flip p 0.5, vertical
flip p 0.1, Gaussian blur (kernel 3, 5 or 7) p 0.5. Geometry is applied to image and mask together
with one ``grid_sample`` per batch (rotation and flips folded into one affine matrix per sample);
the blur is one grouped convolution with a 7-tap kernel per sample (identity for unblurred ones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugmentConfig

__all__ = ["AugmentConfig", "augment_batch", "gaussian_taps"]




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
        images: N x C x H x W float.
        masks: N x 1 x H x W float in {0, 1}.
        config: what to apply.
        generator: CPU generator for the random draws (seeded for repeatable runs).
        share: ``(start, total)`` when the N pairs are rows ``start`` to ``start + N`` of a batch of
            ``total`` (one process's share in distributed training): the draws are made for the
            whole batch, so the shares of all processes are augmented as one process would augment
            the whole batch.

    Returns:
        Augmented (images, masks); masks stay binary (bilinear resampling, then >= 0.5).
    """
    if not config.enabled:
        return images, masks
    n, c, h, w = images.shape
    device = images.device
    start, total = share if share is not None else (0, n)
    rows = slice(start, start + n)

    def draw():
        return torch.rand((total,), generator=generator)[rows]

    angle = (draw() * 2 - 1) * math.radians(config.rotate_degrees)
    sx = torch.where(draw() < config.hflip, -1.0, 1.0)
    sy = torch.where(draw() < config.vflip, -1.0, 1.0)
    blur_on = draw() < config.blur
    kernel_idx = torch.randint(len(config.blur_kernels), (total,), generator=generator)[rows]

    if config.rotate_degrees or config.hflip or config.vflip:
        cos, sin = torch.cos(angle), torch.sin(angle)
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
    return images, masks


def _identity_taps() -> Tensor:
    taps = torch.zeros(7)
    taps[3] = 1.0
    return taps
