"""Joining what blocks left open: face adjacency, connected components, whole-object post-processing.

Nodes are (block, slice, provisional id) from ``blocks.local_postprocess``. Undecided background
pieces that touch across block faces are joined; a joined background region that reaches no image
border is a hole and becomes foreground. Pending foreground pieces (and holes) that touch across
faces, or through such a hole, are joined into objects; each object is then post-processed whole
(minimum size; instances: the same watershed split, on a crop read from the provisional labels),
so the labels equal a whole-image run up to the numbering of the objects.

``finish_block`` turns one block's provisional labels into final labels with the plan.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .blocks import EIGHT, FOUR, Block, BlockSlice, box_pixels, crop_box, overlap, union_box
from .postprocess import MAX_SPLIT_PIXELS, continue_ids, split_instances

__all__ = ["MergePlan", "plan_merge", "finish_block"]

Node = tuple[int, int, int]  # (block index, flat slice, provisional id)


@dataclass
class MergePlan:
    """Final ids for every block slice.

    Attributes:
        base: per (block, slice), what is added to its settled ids 1..local (semantic: unused).
        values: per (block, slice), provisional id -> final label (0 removes it).
        splits: per (block, slice), objects split whole: (member ids, crop box, final-id crop).
        objects: total number of objects (instances), and ``joined``: objects made of parts of
            several blocks.
    """

    instances: bool
    base: dict[tuple[int, int], int] = field(default_factory=dict)
    values: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    splits: dict[tuple[int, int], list[tuple[list[int], tuple[int, int, int, int], np.ndarray]]] = \
        field(default_factory=dict)
    objects: int = 0
    joined: int = 0


class _Union:
    def __init__(self) -> None:
        self.parent: dict[Node, Node] = {}

    def find(self, a: Node) -> Node:
        root = self.parent.setdefault(a, a)
        while root != self.parent[root]:
            root = self.parent[root]
        while a != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def join(self, a: Node, b: Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _face_pairs(blocks: list[Block], structure: np.ndarray):
    """Yield (block a, side of a, block b, side of b, offsets) for blocks sharing a face or corner."""
    by_corner = {(b.first, b.y0, b.x0): b for b in blocks}
    by_right_edge = {(b.first, b.y0, b.x1): b for b in blocks}
    offsets = (-1, 0, 1) if structure is EIGHT else (0,)
    for a in blocks:
        below = by_corner.get((a.first, a.y1, a.x0))
        right = by_corner.get((a.first, a.y0, a.x1))
        if below is not None:
            yield a, "bottom", below, "top", offsets
        if right is not None:
            yield a, "right", right, "left", offsets
        if structure is EIGHT:
            diagonal = by_corner.get((a.first, a.y1, a.x1))
            if diagonal is not None:
                yield a, "bottom-right", diagonal, "top-left", (0,)
            below_left = by_right_edge.get((a.first, a.y1, a.x0))  # its top-right touches a's bottom-left
            if below_left is not None:
                yield a, "bottom-left", below_left, "top-right", (0,)


def _strip(info: BlockSlice, side: str) -> np.ndarray:
    if "-" in side:  # a corner: one pixel of a row
        row, col = side.split("-")
        edge = info.faces.get(row)
        if edge is None:
            return np.zeros(0, np.int32)
        return edge[:1] if col == "left" else edge[-1:]
    return info.faces.get(side, np.zeros(0, np.int32))


def _touching(a: np.ndarray, b: np.ndarray, offsets: tuple[int, ...], keep: Callable[[np.ndarray], np.ndarray]):
    for d in offsets:
        sa = a[max(0, -d):len(a) - max(0, d)]
        sb = b[max(0, d):len(b) - max(0, -d)]
        both = keep(sa) & keep(sb)
        yield from zip(sa[both].tolist(), sb[both].tolist())


def plan_merge(blocks: list[Block], infos: dict[tuple[int, int], BlockSlice], height: int, width: int,
               instances: bool, min_size: int,
               read: Callable[[Block, int, tuple[slice, slice]], np.ndarray]) -> MergePlan:
    """Decide holes, join objects across faces and post-process them; see the module docstring.

    Args:
        infos: per (block index, flat slice) what ``local_postprocess`` left open.
        read: ``read(block, slice, (ys, xs))`` returns provisional labels of a region of a block
            (block coordinates); used to crop the objects that are split whole.
    """
    structure = FOUR if instances else EIGHT
    by_index = {b.index: b for b in blocks}
    background = _Union()
    pairs = list(_face_pairs(blocks, structure))
    for a, side_a, b, side_b, _ in pairs:
        if "-" in side_a:  # background joins through faces only (4-connected, as hole filling)
            continue
        for s in range(a.first, a.end):
            strips = _strip(infos[(a.index, s)], side_a), _strip(infos[(b.index, s)], side_b)
            for u, v in _touching(*strips, (0,), lambda x: x < 0):
                background.join((a.index, s, u), (b.index, s, v))
    border: dict[Node, bool] = defaultdict(bool)
    for (bi, s), info in infos.items():
        for i, entry in info.background.items():
            root = background.find((bi, s, i))
            border[root] |= entry[5]
    holes = {(bi, s, i) for (bi, s), info in infos.items() for i in info.background
             if not border[background.find((bi, s, i))]}

    objects = _Union()

    def solid(node: Node) -> bool:
        return node[2] > infos[node[:2]].local or node in holes

    for (bi, s), info in infos.items():
        for i in info.pending:
            objects.find((bi, s, i))
        for b_id, f_id in info.touching:
            if (bi, s, b_id) in holes:
                objects.join((bi, s, b_id), (bi, s, f_id))
    for a, side_a, b, side_b, offsets in pairs:
        for s in range(a.first, a.end):
            for u, v in _touching(_strip(infos[(a.index, s)], side_a), _strip(infos[(b.index, s)], side_b), offsets,
                                  lambda x: x != 0):
                na, nb = (a.index, s, u), (b.index, s, v)
                if solid(na) and solid(nb):
                    objects.join(na, nb)

    members: dict[Node, list[Node]] = defaultdict(list)
    for node in list(objects.parent):
        if solid(node):
            members[objects.find(node)].append(node)

    plan = MergePlan(instances)
    next_id = 1
    for b in blocks:
        for s in range(b.first, b.end):
            plan.base[(b.index, s)] = next_id - 1
            plan.values[(b.index, s)] = {i: 0 for i in infos[(b.index, s)].background}
            if instances:
                next_id += infos[(b.index, s)].local
    for root in sorted(members):
        group = members[root]
        entries = [_entry(infos[n[:2]], n[2]) for n in group]
        area = sum(e[0] for e in entries)
        box = union_box([e[1:5] for e in entries])
        plan.joined += len({n[0] for n in group}) > 1
        if not instances:
            keep = int(min_size <= 1 or area >= min_size)
            for n in group:
                plan.values[n[:2]][n[2]] = keep
            continue
        if area < max(1, min_size):
            for n in group:
                plan.values[n[:2]][n[2]] = 0
            continue
        crop = crop_box(box, height, width)
        if box_pixels(crop) > MAX_SPLIT_PIXELS:
            for n in group:
                plan.values[n[:2]][n[2]] = next_id
            next_id += 1
            continue
        mask = np.zeros((crop[1] - crop[0], crop[3] - crop[2]), bool)
        by_block: dict[tuple[int, int], list[int]] = defaultdict(list)
        for n in group:
            by_block[n[:2]].append(n[2])
        for (bi, s), ids in by_block.items():
            block = by_index[bi]
            part = overlap(block, crop)
            if part is None:
                continue
            region = read(block, s, part)
            ys = slice(part[0].start + block.y0 - crop[0], part[0].stop + block.y0 - crop[0])
            xs = slice(part[1].start + block.x0 - crop[2], part[1].stop + block.x0 - crop[2])
            mask[ys, xs] |= np.isin(region, ids)
        pieces = split_instances(mask, min_size=min_size)
        next_id = continue_ids(pieces, next_id)
        for key, ids in by_block.items():
            for i in ids:
                plan.values[key][i] = 0  # overwritten by the split crop where the object is
            plan.splits.setdefault(key, []).append((ids, crop, pieces))
    plan.objects = next_id - 1
    return plan


def _entry(info: BlockSlice, i: int) -> tuple:
    return info.pending[i] if i > 0 else info.background[i]


def finish_block(provisional: np.ndarray, block: Block, s: int, info: BlockSlice, plan: MergePlan,
                 dtype: Any) -> np.ndarray:
    """Final labels of one block slice from its provisional labels and the merge plan."""
    key = (block.index, s)
    out = np.zeros(provisional.shape, dtype)
    settled = (provisional > 0) & (provisional <= info.local)
    if plan.instances:
        out[settled] = provisional[settled] + plan.base[key]
    else:
        out[settled] = 1
    values = plan.values.get(key, {})
    if values:
        lo, hi = min(values), max(values)
        lut = np.zeros(hi - lo + 1, np.int64)
        for i, v in values.items():
            lut[i - lo] = v
        open_ = ~settled & (provisional != 0)
        out[open_] = lut[provisional[open_] - lo]
    for ids, crop, pieces in plan.splits.get(key, []):
        part = overlap(block, crop)
        if part is None:
            continue
        here = np.isin(provisional[part], ids)
        ys = slice(part[0].start + block.y0 - crop[0], part[0].stop + block.y0 - crop[0])
        xs = slice(part[1].start + block.x0 - crop[2], part[1].stop + block.x0 - crop[2])
        out[part][here] = pieces[ys, xs][here]
    return out
