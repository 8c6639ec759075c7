"""Training data: image/mask pairs from folders or arrays, checked, normalised and batched.

Images are normalised once, with the same ``InferenceConfig`` the trained model will store, so
training and inference see identical intensities. Two sampling modes match the two inference modes:

* ``"tile"``: random patches at native resolution (nuclei); an image contributes patches in
  proportion to its area, so one large painted image trains as well as many small ones;
* ``"resize"``: every image resized to the patch size (the paper's protocol; skin lesions).

Batches are built on the CPU from in-memory arrays and augmented on the training device
(``augment.py``), so a GPU never waits on Python-side image processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from ..errors import DataError, InputError, SettingsError
from ..config import InferenceConfig
from ..inference.preprocess import intensity_range, select_channels, to_network_input
from ..inference.resize import resize_bilinear, resize_keep_dtype

__all__ = ["Sample", "SampleList", "DataError", "as_foreground", "samples_from_arrays", "samples_from_folders",
           "split_samples", "PreparedSet", "prepare", "BatchSampler", "Share"]

_SHOWN_PROBLEMS = 10


@dataclass
class Sample:
    """One training pair.

    Attributes:
        image: H x W or H x W x C, raw values as loaded.
        mask: H x W bool foreground.
        name: file stem or layer name, used in messages.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str


class SampleList(list):
    """The usable pairs (a list of ``Sample``), and those left out with ``skip_bad``.

    Attributes:
        skipped: one dict per pair left out: ``name``, ``file`` (the file at fault, or the pair's
            name for arrays) and ``reason`` (a message naming the file).
    """

    def __init__(self, samples: Sequence[Sample] = (), skipped: Sequence[dict[str, str]] = ()) -> None:
        super().__init__(samples)
        self.skipped: list[dict[str, str]] = list(skipped)


def as_foreground(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Foreground of a binary or instance-label mask: ``mask > 0`` as an H x W bool array.

    The values are checked by ``io.images.check_mask``, as evaluation checks them.

    Raises:
        DataError: negative or fractional values, NaN, differing channels, or not 2D.
    """
    from ..io.images import check_mask

    return check_mask(mask, name, DataError) > 0


def _sample(image: np.ndarray, mask: np.ndarray, name: str, image_name: str, mask_name: str,
            channel: int | None) -> Sample:
    """One checked pair; every problem raises a ``DataError`` naming the file at fault."""
    try:
        image = select_channels(np.asarray(image), channel)
        intensity_range(image, InferenceConfig())  # NaN, infinite, empty or non-numeric pixels
    except InputError as exc:
        raise DataError(f"{image_name}: {exc}") from None
    fg = as_foreground(mask, mask_name)
    if fg.shape != image.shape[:2]:
        which = "its mask" if mask_name == image_name else f"its mask {mask_name}"
        raise DataError(f"{image_name}: image is {image.shape[0]}x{image.shape[1]} but {which} is "
                        f"{fg.shape[0]}x{fg.shape[1]}")
    return Sample(image, fg, name)


def _collect(pairs: Sequence[tuple[str, str, Callable[[], Sample]]], skip_bad: bool) -> SampleList:
    """Build every pair from (name, file, builder): all problems in one error, or left out with ``skip_bad``."""
    samples, problems = SampleList(), []
    for name, file, build in pairs:
        try:
            samples.append(build())
        except InputError as exc:  # DataError, ImageReadError
            text = str(exc)
            problems.append({"name": name, "file": text.split(": ", 1)[0] if ": " in text else file,
                             "reason": text})
    shown = "; ".join(p["reason"] for p in problems[:_SHOWN_PROBLEMS])
    if len(problems) > _SHOWN_PROBLEMS:
        shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
    if problems and not skip_bad:
        error = DataError(f"{len(problems)} unusable pair(s): {shown}; fix or remove them")
        error.bad_pairs = problems  # lets the command line offer its option to skip them
        raise error
    if not samples:
        raise DataError(f"no usable pairs: all {len(problems)} were left out ({shown})")
    samples.skipped = problems
    return samples


def samples_from_arrays(images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                        names: Sequence[str] | None = None, channel: int | None = None,
                        skip_bad: bool = False) -> SampleList:
    """Pairs from in-memory arrays, e.g. napari Image and Labels layers of different sizes.

    Args:
        images: 2D images (H x W or H x W x C).
        masks: binary or label masks of the same H x W as their image.
        names: for messages; "pair 1", "pair 2", ... by default.
        channel: channel to train on in multichannel images (see ``preprocess.select_channels``).
        skip_bad: leave out unusable pairs (listed in the result's ``skipped``) instead of failing.

    Raises:
        DataError: different counts; unless ``skip_bad``, unusable pairs (bad mask values, NaN
            pixels, a stack, differing sizes; all listed); no usable pair at all.
    """
    if len(images) != len(masks):
        raise DataError(f"got {len(images)} images but {len(masks)} masks; give one mask per image")
    if not images:
        raise DataError("no training pairs given; add at least one image with its mask")
    names = list(names) if names is not None else [f"pair {i + 1}" for i in range(len(images))]
    return _collect([(name, name, lambda i=i, m=m, n=name: _sample(i, m, n, n, n, channel))
                     for i, m, name in zip(images, masks, names)], skip_bad)


def samples_from_folders(images_dir: str | Path, masks_dir: str | Path, ids: Sequence[str] | None = None,
                         channel: int | None = None, skip_bad: bool = False) -> SampleList:
    """Pairs from two folders, matched by name as ``io.pairing`` describes (``cell.ome.tif`` with
    ``cell_mask.png``, ``a.png`` with ``a_labels.tif``, ...); any supported format on either side.

    Args:
        images_dir: folder of images.
        masks_dir: folder of binary or label masks.
        ids: only these names (e.g. a split), in this order.
        channel: channel to train on in multichannel images.
        skip_bad: leave out pairs that cannot be read or used (listed in the result's ``skipped``,
            each with its file and the reason) instead of failing.

    Raises:
        DataError: a folder is missing or empty, images without masks or masks without images,
            listed ids without files (all listed in one message); unless ``skip_bad``, unreadable
            files, bad mask values, NaN pixels, stacks or size mismatches (all listed, each naming
            its file); no usable pair at all.
    """
    from ..io.images import read_image, read_mask
    from ..io.pairing import match_folders, problems_message

    pairs, problems = match_folders(images_dir, masks_dir, ids)
    if problems:
        raise DataError(problems_message(problems, images_dir, masks_dir))
    return _collect([(p.name, str(p.image), lambda p=p: _sample(read_image(p.image), read_mask(p.mask), p.name,
                                                                 str(p.image), str(p.mask), channel))
                     for p in pairs], skip_bad)


def split_samples(samples: list[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Hold out a fixed, seeded fraction for validation (at least one pair when val_fraction > 0).

    Raises:
        DataError: fewer than two pairs when a validation share is asked for.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return list(samples), []
    if len(samples) < 2:
        raise DataError("only one image/mask pair: nothing to hold out for validation; add a second pair, "
                        "give a validation pair or folder, or set the validation fraction to 0")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1, round(val_fraction * len(samples))))
    val_idx = set(order[:n_val].tolist())
    return ([s for i, s in enumerate(samples) if i not in val_idx],
            [s for i, s in enumerate(samples) if i in val_idx])


@dataclass
class PreparedSet:
    """Normalised images ready for batching.

    Attributes:
        images: per image, C x H x W float16 in [0, 1] (C = 1 for grayscale, else 3).
        masks: per image, H x W bool.
        names: per image.
        weights: patches each image contributes per epoch ("tile" mode; 1 each for "resize").
        resized: in "tile" mode with ``resize_mix``, each image and mask also resized whole to the
            patch size, so tile training can also see the paper's whole-image view.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]
    weights: list[int]
    resized: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.images)


def prepare(samples: list[Sample], inference: InferenceConfig, mode: str, patch_size: int,
            max_patches_per_image: int = 16, with_resized: bool = False
            ) -> PreparedSet:
    """Normalise and, in "resize" mode, resize every pair once.

    Args:
        samples: pairs to prepare.
        inference: normalisation settings (those the trained model will store).
        mode: "tile" (training patches at native resolution) or "resize" (resized to ``patch_size``).
        patch_size: patch edge in pixels.
        max_patches_per_image: cap on an image's patches per epoch in "tile" mode.
        with_resized: in "tile" mode, also keep a whole-image copy resized to the patch size.

    Raises:
        DataError: in "tile" mode, images smaller than the patch (all listed); masks all empty or
            all foreground.
    """
    if mode not in ("tile", "resize"):
        raise DataError(f"mode must be 'tile' or 'resize', got {mode!r}")
    if mode == "tile":
        small = [f"{s.name} ({s.image.shape[0]}x{s.image.shape[1]})" for s in samples
                 if min(s.image.shape[:2]) < patch_size]
        if small:
            fit = max(16, min(min(s.image.shape[:2]) for s in samples) // 16 * 16)
            raise DataError(f"patch size {patch_size} is larger than {len(small)} image(s): "
                            f"{', '.join(small[:5])}; use a patch size of {fit} or less, or mode 'resize'")
    fg = [float(s.mask.mean()) for s in samples]
    if samples and max(fg) == 0.0:
        raise DataError("every mask is empty (no foreground): paint or load labels for the objects to segment")
    if samples and min(fg) == 1.0:
        raise DataError("every mask is entirely foreground: the model needs background pixels too; "
                        "label only the objects")
    def resized(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = resize_bilinear(rgb.transpose(1, 2, 0), patch_size, patch_size).transpose(2, 0, 1)
        return np.ascontiguousarray(img), resize_keep_dtype(mask, patch_size, patch_size)

    images, masks, weights, whole = [], [], [], []
    for s in samples:
        try:
            rgb = to_network_input(s.image, inference)  # 3 x H x W float32
        except InputError as exc:
            raise DataError(f"{s.name}: {exc}") from None
        grey = s.image.ndim == 2
        if grey:
            rgb = rgb[:1]
        mask = s.mask
        if mode == "tile" and with_resized:
            r_img, r_mask = resized(rgb, mask)
            whole.append((r_img.astype(np.float16), r_mask))
        if mode == "resize":
            rgb, mask = resized(rgb, mask)
            weights.append(1)
        else:
            area = s.image.shape[0] * s.image.shape[1]
            weights.append(int(min(max_patches_per_image, max(1, math.floor(area / patch_size ** 2 + 0.5)))))
        images.append(rgb.astype(np.float16))
        masks.append(np.ascontiguousarray(mask))
    return PreparedSet(images, masks, [s.name for s in samples], weights, whole or None)


class Share(NamedTuple):
    """Rows ``start`` to ``start + size`` of a batch of ``total`` pairs: one process's part of it."""

    start: int
    size: int
    total: int


class BatchSampler:
    """Epochs of batches of (image C x P x P, mask 1 x P x P) drawn from a ``PreparedSet``.

    Args:
        data: prepared images.
        mode: "tile" (random crops) or "resize" (whole resized images).
        patch_size: P.
        batch_size: pairs per batch (the whole batch, shared by all processes); the last, smaller
            batch of an epoch is kept when it holds at least two pairs and one per process
            (LayerNorm has no batch statistics, so small batches are harmless).
        rng: generator for the epoch order and crop positions (seeded for repeatable runs).
        resize_mix: in "tile" mode, probability of drawing the whole image resized instead of a
            native-resolution crop (needs ``prepare(..., with_resized=True)``).
        rank, world: in distributed training, this process's rank and the number of processes:
            every process makes the random draws of the whole batch and builds only its share.

    Raises:
        SettingsError: a batch smaller than the number of processes.
        DataError: fewer patches per epoch than processes.
    """

    def __init__(self, data: PreparedSet, mode: str, patch_size: int, batch_size: int,
                 rng: np.random.Generator, resize_mix: float = 0.0, rank: int = 0, world: int = 1) -> None:
        self.data, self.mode, self.patch, self.batch_size, self.rng = data, mode, patch_size, batch_size, rng
        if resize_mix and data.resized is None:
            raise ValueError("resize_mix needs the data prepared with with_resized=True")
        if batch_size < world:
            raise SettingsError(f"batch size {batch_size} cannot be shared by {world} processes: the batch size is "
                                f"the whole batch, split between them; use a batch size of at least {world}")
        self.resize_mix, self.rank, self.world = resize_mix, rank, world
        self.index = np.repeat(np.arange(len(data)), data.weights)
        if len(self) == 0:
            raise DataError(f"an epoch has {len(self.index)} training patches, fewer than the {world} processes; "
                            "start fewer processes or give more or larger images")

    def __len__(self) -> int:
        n = len(self.index)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= max(2, self.world) or (full == 0 and rest >= self.world) else 0)

    def epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images N x 3 x P x P float32, masks N x 1 x P x P float32) numpy batches (this
        process's share of each batch in distributed training)."""
        for images, masks, _ in self.shares():
            yield images, masks

    def shares(self) -> Iterator[tuple[np.ndarray, np.ndarray, Share]]:
        """Like ``epoch``, with the ``Share`` of the batch each (images, masks) pair is."""
        order = self.rng.permutation(self.index)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            # As numpy.array_split: the first len(idx) % world processes take one pair more.
            size, extra = divmod(len(idx), self.world)
            share = Share(self.rank * size + min(self.rank, extra), size + (self.rank < extra), len(idx))
            yield (*self._batch(idx, share), share)

    def _batch(self, idx: np.ndarray, share: Share) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        images = np.empty((share.size, 3, p, p), np.float32)
        masks = np.empty((share.size, 1, p, p), np.float32)
        for j, i in enumerate(idx):
            # Every pair's draws are made, so all processes' generators stay in step.
            img, mask = self.data.images[i], self.data.masks[i]
            if self.resize_mix and self.rng.random() < self.resize_mix:
                img, mask = self.data.resized[i]
            elif self.mode == "tile":
                h, w = mask.shape
                y = int(self.rng.integers(0, h - p + 1))
                x = int(self.rng.integers(0, w - p + 1))
                img, mask = img[:, y:y + p, x:x + p], mask[y:y + p, x:x + p]
            row = j - share.start
            if 0 <= row < share.size:
                images[row] = img  # broadcasts one grey channel to three
                masks[row, 0] = mask
        return images, masks
