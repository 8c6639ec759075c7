"""One image in blocks: the probabilities and the labels of each block, exactly as a whole-image run.

Probabilities: a block (a range of slices, and a Y/X rectangle of each) runs the network on the
tiles of the *whole image's* tile grid that cover it, and blends them with the whole grid's
weights in the same order, so its pixels get the values a single-process run gives them.

Labels: post-processing is per 2D slice and needs whole objects (hole filling, minimum size, the
watershed split of touching objects). Each block therefore settles only what it can see whole:

* background components (4-connected, as ``binary_fill_holes``) that touch no face of the block
  are holes and filled; those touching an inner face (a face shared with another block) are kept
  with negative ids for ``merge``; those touching only the image border are background;
* foreground components (after that filling) that touch no inner face and no undecided
  background are post-processed here, exactly as ``postprocess_slice`` would (ids 1..k);
* the rest ("pending", ids k+1..) go to ``merge``, which joins them across faces (face adjacency
  and connected components, through the holes that turn out to be enclosed) and post-processes
  every joined object whole.

``BlockSlice`` records what a block slice leaves open: face strips, areas, bounding boxes and
which foreground touches which undecided background.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .postprocess import remove_small, split_instances

__all__ = ["Block", "BlockSlice", "plan_blocks", "block_probabilities", "local_postprocess", "FOUR", "EIGHT"]

FOUR = ndi.generate_binary_structure(2, 1)
EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Block:
    """Slices ``first..end`` (flat index over the stack axes) and the rectangle ``y0:y1, x0:x1`` of each."""

    index: int
    first: int
    end: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


@dataclass
class BlockSlice:
    """What one slice of one block leaves to ``merge`` (all coordinates are the slice's).

    Attributes:
        local: objects settled here (ids 1..local; instances: their count; semantic: 1 if any).
        pending: per pending foreground id (local+1..), (area, y0, y1, x0, x1).
        background: per undecided background id (-1, -2, ...): (area, y0, y1, x0, x1, touches border).
        touching: (background id, foreground id) pairs that are neighbours in this block.
        faces: the block's edge rows/columns of provisional ids, keyed "top", "bottom", "left", "right".
    """

    local: int = 0
    pending: dict[int, tuple[int, int, int, int, int]] = field(default_factory=dict)
    background: dict[int, tuple[int, int, int, int, int, bool]] = field(default_factory=dict)
    touching: list[tuple[int, int]] = field(default_factory=list)
    faces: dict[str, np.ndarray] = field(default_factory=dict)


def plan_blocks(stack_count: int, height: int, width: int, block_size: int, whole_slices: bool) -> list[Block]:
    """Blocks covering every slice: ``block_size`` squares, or whole slices (resize mode, small slices).

    Small slices are grouped so a block holds about ``block_size**2`` pixels.
    """
    if whole_slices or (height <= block_size and width <= block_size):
        per = max(1, (block_size * block_size) // max(1, height * width))
        return [Block(i, s, min(stack_count, s + per), 0, height, 0, width)
                for i, s in enumerate(range(0, stack_count, per))]
    blocks = []
    for s in range(stack_count):
        for y in range(0, height, block_size):
            for x in range(0, width, block_size):
                y1, x1 = min(height, y + block_size), min(width, x + block_size)
                blocks.append(Block(len(blocks), s, s + 1, y, y1, x, x1))
    return blocks


def block_probabilities(read: Any, stack: tuple[int, ...], block: Block, grid: Any, to_input: Any, run: Any,
                        per_batch: int) -> np.ndarray:
    """Blended probabilities of ``block``'s rectangle in one slice, as the whole-image grid gives them.

    Args:
        read: ``read(key)`` returns the pixels of ``stack + (y slice, x slice)`` (see ``lazy.Arranged``).
        grid: the whole slice's ``TileGrid``.
        to_input: one tile's pixels -> 3 x h x w network input.
        run: a batch of inputs -> probabilities (N x h x w).
    """
    tiles = [t for t in grid if t.y0 < block.y1 and t.y1 > block.y0 and t.x0 < block.x1 and t.x1 > block.x0]
    ry0, ry1 = min(t.y0 for t in tiles), max(t.y1 for t in tiles)
    rx0, rx1 = min(t.x0 for t in tiles), max(t.x1 for t in tiles)
    region = read(stack + (slice(ry0, ry1), slice(rx0, rx1)))
    acc = np.zeros((ry1 - ry0, rx1 - rx0), np.float32)
    # The whole grid's order of tiles: a pixel sums the same values in the same order as there.
    shifted = [dataclasses.replace(t, y0=t.y0 - ry0, y1=t.y1 - ry0, x0=t.x0 - rx0, x1=t.x1 - rx0) for t in tiles]
    for start in range(0, len(shifted), per_batch):
        batch = shifted[start:start + per_batch]
        probs = run(np.stack([to_input(region[t.slices]) for t in batch]))
        for t, p in zip(batch, probs):
            grid.accumulate(acc, t, p)
    core = acc[block.y0 - ry0:block.y1 - ry0, block.x0 - rx0:block.x1 - rx0]
    return np.clip(core, 0.0, 1.0, out=core)


def inner_faces(block: Block, height: int, width: int) -> dict[str, bool]:
    """Which sides of ``block`` are shared with another block (not the image border)."""
    return {"top": block.y0 > 0, "bottom": block.y1 < height, "left": block.x0 > 0, "right": block.x1 < width}


def _edge(array: np.ndarray, side: str) -> np.ndarray:
    return {"top": array[0], "bottom": array[-1], "left": array[:, 0], "right": array[:, -1]}[side]


def _ids_on(labels: np.ndarray, sides: list[str]) -> set[int]:
    found: set[int] = set()
    for side in sides:
        found.update(int(v) for v in np.unique(_edge(labels, side)))
    found.discard(0)
    return found


def _neighbour_pairs(a: np.ndarray, b: np.ndarray, structure: np.ndarray) -> set[tuple[int, int]]:
    """(a id, b id) for pixels of ``a`` and ``b`` (same shape) that are neighbours under ``structure``."""
    pairs: set[tuple[int, int]] = set()
    h, w = a.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0) or not structure[dy + 1, dx + 1]:
                continue
            sa = a[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            sb = b[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
            both = (sa != 0) & (sb != 0)
            if both.any():
                pairs.update(zip(sa[both].tolist(), sb[both].tolist()))
    return pairs


def _boxes(labels: np.ndarray, ids: list[int], offset: tuple[int, int]) -> dict[int, tuple[int, int, int, int, int]]:
    """(area, y0, y1, x0, x1) in slice coordinates of each id (positive ids of ``labels``)."""
    out = {}
    if not ids:
        return out
    boxes = ndi.find_objects(labels, max_label=max(ids))
    for i in ids:
        ys, xs = boxes[i - 1]
        area = int(np.count_nonzero(labels[ys, xs] == i))
        out[i] = (area, ys.start + offset[0], ys.stop + offset[0], xs.start + offset[1], xs.stop + offset[1])
    return out


def local_postprocess(prob: np.ndarray, block: Block, height: int, width: int, threshold: float, instances: bool,
                      min_size: int) -> tuple[np.ndarray, BlockSlice]:
    """Provisional labels of one block slice (int32) and what it leaves to ``merge``.

    Settled objects get ids 1..local (semantic: 1), pending foreground local+1.., undecided
    background negative ids; everything else is 0.
    """
    inner = inner_faces(block, height, width)
    inner_sides = [s for s, v in inner.items() if v]
    border_sides = [s for s, v in inner.items() if not v]
    mask = prob > threshold
    background, _ = ndi.label(~mask, structure=FOUR)
    on_inner = _ids_on(background, inner_sides)
    on_border = _ids_on(background, border_sides)
    holes = (background > 0) & ~np.isin(background, list(on_inner | on_border))
    mask |= holes
    undecided = sorted(on_inner)
    bg = np.zeros(mask.shape, np.int32)
    for n, i in enumerate(undecided, start=1):
        bg[background == i] = -n
    del background, holes

    structure = FOUR if instances else EIGHT
    components, count = ndi.label(mask, structure=structure, output=np.int32)
    touching = _neighbour_pairs(bg, components, structure) if undecided else set()
    pending_ids = sorted(_ids_on(components, inner_sides) | {f for _, f in touching})
    settled = mask & ~np.isin(components, pending_ids)
    info = BlockSlice()
    if instances:
        labels = split_instances(settled, min_size=min_size)
        info.local = int(labels.max(initial=0))
    else:
        if min_size > 1:
            remove_small(settled, min_size)
        labels = settled.astype(np.int32)
        info.local = 1
    renumber = {old: info.local + n for n, old in enumerate(pending_ids, start=1)}
    if pending_ids:
        lut = np.zeros(count + 1, np.int32)
        for old, new in renumber.items():
            lut[old] = new
        pending = lut[components]
        labels[pending > 0] = pending[pending > 0]
    offset = (block.y0, block.x0)
    pending_boxes = _boxes(labels * (labels > info.local), list(renumber.values()), offset)
    info.pending = pending_boxes
    bg_boxes = _boxes(-bg, list(range(1, len(undecided) + 1)), offset)
    info.background = {-i: box + (undecided[i - 1] in on_border,) for i, box in bg_boxes.items()}
    info.touching = sorted((b, renumber[f]) for b, f in touching)
    labels[bg < 0] = bg[bg < 0]
    info.faces = {side: _edge(labels, side).copy() for side in inner_sides}
    return labels, info


def crop_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """A bounding box grown by one pixel (clipped to the slice), as ``split_instances`` crops objects."""
    y0, y1, x0, x1 = box
    return max(0, y0 - 1), min(height, y1 + 1), max(0, x0 - 1), min(width, x1 + 1)


def box_pixels(box: tuple[int, int, int, int]) -> int:
    return max(0, box[1] - box[0]) * max(0, box[3] - box[2])


def union_box(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def overlap(block: Block, box: tuple[int, int, int, int]) -> tuple[slice, slice] | None:
    """The part of ``box`` inside ``block``'s rectangle, in block coordinates (None if empty)."""
    y0, y1 = max(box[0], block.y0), min(box[1], block.y1)
    x0, x1 = max(box[2], block.x0), min(box[3], block.x1)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0 - block.y0, y1 - block.y0), slice(x0 - block.x0, x1 - block.x0)


def count_pixels(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
