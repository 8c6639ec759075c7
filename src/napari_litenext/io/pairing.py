"""Pairing images with masks by file name: the one rule of training, evaluation and the widgets.

An image and a mask belong together when their names match after removing the file ending
(``.png``, ``.tif``, ``.ome.tif``, ...) and, from the mask's name only, one of the endings
``_mask``, ``_masks``, ``_label``, ``_labels``, ``_gt``. So ``cell7.png`` pairs with ``cell7.tif``,
``cell7_mask.png`` or ``cell7_labels.tif``, and ``cell.ome.tif`` with ``cell_mask.png``.
Hidden files and files of other types are ignored; two files claiming the same name, images without
masks, masks without images and size mismatches are all reported together, so a user fixes a
folder in one go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .images import IMAGE_SUFFIXES, output_stem

__all__ = ["MASK_ENDINGS", "Pair", "image_key", "mask_key", "match_folders", "plane_shape", "check_sizes",
           "problems_message"]

MASK_ENDINGS = ("_mask", "_masks", "_label", "_labels", "_gt")
_SHOWN_PROBLEMS = 12


@dataclass(frozen=True)
class Pair:
    """One image with its mask: ``name`` is the shared key (see the module docstring)."""

    name: str
    image: Path
    mask: Path


def image_key(path: str | os.PathLike) -> str:
    """The name an image is paired by: ``cells.ome.tif`` -> ``cells``."""
    return output_stem(path)


def mask_key(path: str | os.PathLike) -> str:
    """The name a mask is paired by: ``cells_mask.png`` -> ``cells`` (one ending removed)."""
    stem = output_stem(path)
    for ending in sorted(MASK_ENDINGS, key=len, reverse=True):
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)]
    return stem


def _index(folder: Path, key: Callable[[Path], str], problems: list[str]) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(key(path), []).append(path)
    for name, paths in found.items():
        if len(paths) > 1:
            problems.append(f"{name}: several files in {folder} ({', '.join(p.name for p in paths)}); keep one")
    return {name: paths[0] for name, paths in found.items()}


def match_folders(images_dir: str | os.PathLike, masks_dir: str | os.PathLike,
                  ids: Sequence[str] | None = None) -> tuple[list[Pair], list[str]]:
    """Pair the images of one folder with the masks of another (no pixels are read).

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        ids: only these names (e.g. a split), in this order; None pairs every file, sorted by name.

    Returns:
        (pairs, problems): the pairs found, and one line per problem (missing folder, no images,
        an unpaired or ambiguous file, a listed id without its files). Callers raise their own
        error with ``problems_message`` when ``problems`` is not empty.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for label, folder in (("images", images_dir), ("masks", masks_dir)):
        if not folder.is_dir():
            return [], [f"{label} folder not found: {folder}"]
    problems: list[str] = []
    images = _index(images_dir, image_key, problems)
    masks = _index(masks_dir, mask_key, problems)
    if ids is not None:
        wanted = [str(i) for i in ids]
        for name in wanted:
            if name not in images or name not in masks:
                side = "image" if name not in images else "mask"
                problems.append(f"{name}: listed, but no {side} of that name in "
                                f"{images_dir if side == 'image' else masks_dir}")
    else:
        if not images:
            problems.append(f"no images found in {images_dir}")
        for name in sorted(set(images) - set(masks)):
            problems.append(f"{images[name].name}: no mask in {masks_dir} (expected {name}.png, {name}_mask.png, ...)")
        for name in sorted(set(masks) - set(images)):
            problems.append(f"{masks[name].name}: no image named {name}.* in {images_dir}")
        wanted = sorted(set(images) & set(masks))
    return [Pair(n, images[n], masks[n]) for n in wanted if n in images and n in masks], problems


def plane_shape(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) of an image file from its header, or None when the layout does not say."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = str(series.axes), tuple(series.shape)
        if "Y" in axes and "X" in axes and len(axes) == len(shape):
            return shape[axes.index("Y")], shape[axes.index("X")]
        return None
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
    return height, width


def check_sizes(pairs: Sequence[Pair]) -> list[str]:
    """One problem line per pair whose image and mask headers give different sizes, or are unreadable."""
    problems = []
    for pair in pairs:
        try:
            image_hw, mask_hw = plane_shape(pair.image), plane_shape(pair.mask)
        except Exception as exc:  # any reader's error for a damaged file: reported with the others
            problems.append(f"{pair.name}: cannot read the file header ({str(exc).splitlines()[0][:120]})")
            continue
        if image_hw and mask_hw and image_hw != mask_hw:
            problems.append(f"{pair.name}: image is {image_hw[0]}x{image_hw[1]} but mask is "
                            f"{mask_hw[0]}x{mask_hw[1]}")
    return problems


def problems_message(problems: Sequence[str], images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> str:
    """One line listing the pairing problems (the first dozen, then a count)."""
    shown = list(problems[:_SHOWN_PROBLEMS])
    if len(problems) > _SHOWN_PROBLEMS:
        shown.append(f"... and {len(problems) - _SHOWN_PROBLEMS} more")
    return (f"{len(problems)} problem(s) pairing {images_dir} with {masks_dir}: " + "; ".join(shown)
            + "; name each mask like its image (optionally ending _mask or _labels)")
