"""Linking instance ids through a Z stack: one id per nucleus from slice to slice.

Each 2D slice is split into instances on its own (``postprocess``), so a nucleus seen in ten
slices has ten ids. ``stitch_stack`` walks the Z axis and gives an object the id of the object in
the previous slice it overlaps best, when their intersection over union reaches ``threshold``
(Cellpose's ``stitch_threshold``). Matches are one-to-one, best IoU first, so two objects of a
slice never take the same id. Slices are read and written one at a time, so numpy, memory-mapped
and zarr label arrays all work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import check_threshold

__all__ = ["link_slice", "stitch_stack", "stitch_as_configured"]


def link_slice(previous: np.ndarray, current: np.ndarray, threshold: float) -> dict[int, int]:
    """Which ids of ``current`` continue an object of ``previous``.

    Args:
        previous, current: H x W label images of neighbouring slices (0 = background).
        threshold: smallest IoU that links two objects, in (0, 1).

    Returns:
        ``{id in current: id in previous}``, one-to-one.
    """
    both = (previous > 0) & (current > 0)
    if not both.any():
        return {}
    pairs, overlap = np.unique(np.stack([current[both], previous[both]]), axis=1, return_counts=True)
    cur_ids, cur_area = np.unique(current[current > 0], return_counts=True)
    prev_ids, prev_area = np.unique(previous[previous > 0], return_counts=True)
    area_c = cur_area[np.searchsorted(cur_ids, pairs[0])]
    area_p = prev_area[np.searchsorted(prev_ids, pairs[1])]
    iou = overlap / (area_c + area_p - overlap)
    links: dict[int, int] = {}
    taken: set[int] = set()
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < threshold:
            break
        c, p = int(pairs[0, k]), int(pairs[1, k])
        if c not in links and p not in taken:
            links[c] = p
            taken.add(p)
    return links


def stitch_stack(labels: Any, z_axis: int, threshold: float) -> int:
    """Link instance ids along ``z_axis`` of a stack, in place.

    Args:
        labels: ... x H x W int label stack (numpy, memory-mapped or zarr), ids unique across it
            (as ``segment`` gives them); modified in place.
        z_axis: index of the Z axis among the leading (non-YX) axes.
        threshold: smallest IoU that links an object to one in the previous slice, in (0, 1).

    Returns:
        How many objects were linked to the slice before them.

    Raises:
        SettingsError: ``threshold`` not in (0, 1).
        ValueError: ``z_axis`` is not one of the leading axes.
    """
    threshold = check_threshold(threshold, "stitch_threshold")
    lead = tuple(labels.shape[:-2])
    if not 0 <= z_axis < len(lead):
        raise ValueError(f"z_axis {z_axis} is not a stack axis of labels with shape {tuple(labels.shape)}")
    others = lead[:z_axis] + lead[z_axis + 1:]
    linked = 0
    for rest in np.ndindex(*others):
        def at(z: int) -> tuple:
            return rest[:z_axis] + (z,) + rest[z_axis:]

        previous = np.asarray(labels[at(0)])
        for z in range(1, lead[z_axis]):
            current = np.asarray(labels[at(z)])
            links = link_slice(previous, current, threshold)
            if links:
                # ids are unique across the stack, so an id taken from the previous slice is free here
                lut = np.arange(int(current.max()) + 1, dtype=current.dtype)
                for c, p in links.items():
                    lut[c] = p
                current = lut[current]
                labels[at(z)] = current
                linked += len(links)
            previous = current
    return linked


def stitch_as_configured(labels: Any, stack_axes: str, inference: Any) -> bool:
    """``stitch_stack`` when ``inference`` (an ``InferenceConfig``) asks for it and there is a Z axis.

    Args:
        labels: the label stack (modified in place).
        stack_axes: the leading axes of ``labels`` (e.g. ``"TZ"``), without Y and X.
        inference: the resolved settings (``instances``, ``stitch_threshold``).

    Returns:
        True when ids were linked.
    """
    if not (inference.instances and inference.stitch_threshold > 0 and "Z" in stack_axes):
        return False
    stitch_stack(labels, stack_axes.index("Z"), inference.stitch_threshold)
    return True
