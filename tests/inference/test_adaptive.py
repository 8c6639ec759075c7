import math

import numpy as np

from napari_litenext.inference.adaptive import AREA_FRACTION, SEED_FRACTION, remove_unlike, seed_depth
from napari_litenext.inference.postprocess import postprocess


def _disk(shape, centre, radius):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _nuclei_and_speck(speck_prob=0.95):
    prob = np.zeros((80, 80), np.float32)
    for c in ((15, 15), (15, 60), (60, 15), (60, 60)):
        prob[_disk(prob.shape, c, 10)] = 0.95  # area 317
    prob[38:41, 38:41] = speck_prob  # a 9-pixel speck
    return prob


def test_specks_far_smaller_than_the_typical_object_are_removed():
    prob = _nuclei_and_speck()
    mask = prob > 0.5
    typical = remove_unlike(mask, prob, 0.5)
    assert typical == np.count_nonzero(_disk((80, 80), (15, 15), 10))
    assert 9 < AREA_FRACTION * typical  # the speck is below the cut, the nuclei far above it
    assert not mask[38:41, 38:41].any()
    assert np.count_nonzero(mask) == 4 * typical


def test_unsure_objects_are_removed_whatever_their_size():
    prob = _nuclei_and_speck(speck_prob=0.85)
    prob[_disk(prob.shape, (38, 38), 12) & (prob == 0)] = 0.85  # large, but nowhere sure
    mask = prob > 0.5
    remove_unlike(mask, prob, 0.5)
    assert not mask[38, 38] and not mask[30, 38] and mask[15, 15]


def test_objects_cut_by_the_image_edge_are_kept_whatever_their_area():
    prob = _nuclei_and_speck()
    prob[0:2, 38:41] = 0.95  # a 6-pixel sliver of a nucleus outside the image
    mask = prob > 0.5
    remove_unlike(mask, prob, 0.5)
    assert mask[0:2, 38:41].all() and not mask[38:41, 38:41].any()


def test_without_enough_confident_objects_only_unsure_ones_go():
    prob = np.zeros((40, 40), np.float32)
    prob[_disk(prob.shape, (15, 15), 10)] = 0.95
    prob[35:37, 35:37] = 0.95  # a 4-pixel speck, confident
    mask = prob > 0.5
    assert remove_unlike(mask, prob, 0.5) is None
    assert mask[35, 35]


def test_seed_depth_scales_with_the_typical_radius():
    assert seed_depth(None) == 0.0
    assert math.isclose(seed_depth(math.pi * 20 ** 2), SEED_FRACTION * 20)


def test_adaptive_postprocess_drops_the_speck_and_keeps_today_behaviour_reachable():
    prob = _nuclei_and_speck()
    today = postprocess(prob, 0.5, instances=True)
    adapted = postprocess(prob, 0.5, instances=True, adaptive=True)
    assert today.max() == 5 and adapted.max() == 4
    speck = np.zeros(prob.shape, bool)
    speck[38:41, 38:41] = True
    assert np.array_equal(adapted > 0, (today > 0) & ~speck)
    semantic = postprocess(prob, 0.5, adaptive=True)
    assert semantic.dtype == np.uint8 and not semantic[38:41, 38:41].any() and semantic[15, 15] == 1
