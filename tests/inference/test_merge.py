"""Labels post-processed in blocks and joined across faces equal a whole-image run, up to numbering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_litenext.inference.blocks import local_postprocess, plan_blocks
from napari_litenext.inference.merge import finish_block, plan_merge
from napari_litenext.inference.postprocess import postprocess


def blocked_postprocess(prob: np.ndarray, block_size: int, threshold: float, instances: bool, min_size: int):
    """Passes A, B, C of ``inference.distributed`` on a known probability stack, in memory."""
    slices, height, width = prob.shape
    blocks = plan_blocks(slices, height, width, block_size, whole_slices=False)
    provisional = np.zeros(prob.shape, np.int32)
    infos = {}
    for b in blocks:
        for s in range(b.first, b.end):
            labels, info = local_postprocess(prob[s, b.y0:b.y1, b.x0:b.x1], b, height, width, threshold,
                                             instances, min_size)
            provisional[s, b.y0:b.y1, b.x0:b.x1] = labels
            infos[(b.index, s)] = info

    def read(b, s, part):
        return provisional[s, b.y0:b.y1, b.x0:b.x1][part]

    plan = plan_merge(blocks, infos, height, width, instances, min_size, read)
    out = np.zeros(prob.shape, np.int32 if instances else np.uint8)
    for b in blocks:
        for s in range(b.first, b.end):
            out[s, b.y0:b.y1, b.x0:b.x1] = finish_block(provisional[s, b.y0:b.y1, b.x0:b.x1], b, s,
                                                        infos[(b.index, s)], plan, out.dtype)
    return out, plan


def same_up_to_numbering(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def split_at_faces(whole: np.ndarray, blocked: np.ndarray) -> int:
    """Objects of the whole-image labels that carry more than one id in the blocked labels."""
    pairs = np.unique(np.stack([whole[whole > 0], blocked[whole > 0]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    return int((counts > 1).sum())


def across_every_face(slices=2, size=96, block=32) -> np.ndarray:
    """Probabilities with objects across every block face and corner: discs, touching pairs, rings with holes."""
    yy, xx = np.mgrid[:size, :size]
    prob = np.full((slices, size, size), 0.1, np.float32)
    edges = range(block, size, block)
    for s in range(slices):
        for e in edges:
            for c in range(8 + 4 * s, size, 24):
                for cy, cx in ((e, c), (c, e)):  # on horizontal and vertical faces
                    prob[s][(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = 0.9
            for f in edges:  # a ring round each corner, its hole crossing four blocks
                ring = (yy - e) ** 2 + (xx - f) ** 2
                prob[s][(ring >= 16) & (ring < 40)] = 0.9
        pair = ((yy - 30) ** 2 + (xx - 60) ** 2 < 36) | ((yy - 30) ** 2 + (xx - 70) ** 2 < 36)  # touching, split
        prob[s][pair] = 0.95
        prob[s][5, 5] = 0.9  # a speck for min_size
    return prob


def blobs(rng, slices=2, height=90, width=110) -> np.ndarray:
    """Random blobs with holes and every kind of contact across faces."""
    noise = ndi.gaussian_filter(rng.random((slices, height, width)), (0, 2.5, 2.5))
    noise -= noise.min()
    return (noise / noise.max()).astype(np.float32)


@pytest.mark.parametrize("instances,min_size", [(True, 0), (True, 12), (False, 0), (False, 12)])
def test_objects_across_every_face_are_whole(instances, min_size):
    prob = across_every_face()
    whole = postprocess(prob, 0.5, instances, min_size)
    blocked, plan = blocked_postprocess(prob, 32, 0.5, instances, min_size)
    assert same_up_to_numbering(whole, blocked)
    if instances:
        assert split_at_faces(whole, blocked) == 0
        assert plan.joined > 20  # the test really puts objects across faces
        assert plan.objects == len(np.unique(whole)) - 1


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("instances,min_size,block", [(True, 0, 32), (True, 20, 48), (False, 20, 32), (False, 0, 64)])
def test_random_blobs_equal_whole_image(seed, instances, min_size, block):
    prob = blobs(np.random.default_rng(seed))
    whole = postprocess(prob, 0.55, instances, min_size)
    blocked, _ = blocked_postprocess(prob, block, 0.55, instances, min_size)
    assert same_up_to_numbering(whole, blocked)


def test_hole_spanning_blocks_is_filled_and_open_background_is_not():
    prob = np.full((1, 64, 64), 0.1, np.float32)
    prob[0, 8:56, 8:56] = 0.9
    prob[0, 12:52, 12:52] = 0.1  # a hole that crosses all four blocks' faces
    prob[0, 30:34, 0:10] = 0.1  # a channel from the border into the ring wall (not through)
    whole = postprocess(prob, 0.5, True, 0)
    blocked, _ = blocked_postprocess(prob, 32, 0.5, True, 0)
    assert whole[0, 30, 30] > 0 and same_up_to_numbering(whole, blocked)
