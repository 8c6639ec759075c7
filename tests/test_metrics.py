"""Pixel and object scores on tiny arrays with answers worked out by hand."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from napari_litenext import metrics
from napari_litenext.metrics import (binary_scores, instance_errors, instance_scores, paper_scores, resize_nearest,
                                     summarise)


def _square(shape, r0, r1, c0, c1, value=1, out=None):
    out = np.zeros(shape, dtype=np.int32) if out is None else out
    out[r0:r1, c0:c1] = value
    return out


# ---------------------------------------------------------------- binary scores

def test_binary_scores_hand_computed():
    # gt: 4 px, pred: 6 px, overlap 3 px -> tp 3, fp 3, fn 1
    gt = _square((5, 5), 0, 2, 0, 2)
    pred = np.zeros((5, 5), dtype=np.uint8)
    pred[0, 0] = pred[0, 1] = pred[1, 1] = 1          # 3 inside gt
    pred[3, 3] = pred[3, 4] = pred[4, 4] = 1          # 3 outside
    s = binary_scores(pred, gt)
    assert s["dice"] == pytest.approx(2 * 3 / (6 + 4))
    assert s["iou"] == pytest.approx(3 / 7)
    assert s["precision"] == pytest.approx(3 / 6)
    assert s["recall"] == pytest.approx(3 / 4)


def test_binary_scores_accepts_255_and_labels():
    gt = _square((6, 6), 1, 4, 1, 4, value=255).astype(np.uint8)
    pred = _square((6, 6), 1, 4, 1, 4, value=7)
    assert binary_scores(pred, gt) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize("pred_fg, gt_fg, expected", [
    (False, False, dict(dice=1.0, iou=1.0, precision=1.0, recall=1.0)),
    (True, False, dict(dice=0.0, iou=0.0, precision=0.0, recall=0.0)),
    (False, True, dict(dice=0.0, iou=0.0, precision=0.0, recall=0.0)),
])
def test_binary_scores_empty_conventions(pred_fg, gt_fg, expected):
    pred = _square((4, 4), 0, 2, 0, 2) if pred_fg else np.zeros((4, 4), int)
    gt = _square((4, 4), 2, 4, 2, 4) if gt_fg else np.zeros((4, 4), int)
    assert binary_scores(pred, gt) == expected


def test_binary_scores_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        binary_scores(np.zeros((4, 4)), np.zeros((4, 5)))


# ---------------------------------------------------------------- paper protocol

def test_resize_nearest_keeps_values_and_centres():
    labels = np.array([[0, 3], [5, 0]], dtype=np.uint16)
    up = resize_nearest(labels, (4, 4))
    assert up.dtype == np.uint16
    np.testing.assert_array_equal(up, np.kron(labels, np.ones((2, 2), np.uint16)))
    # 4 -> 2 samples the centre-aligned pixels 1 and 3 (floor((i + .5) * 2))
    src = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(src, (2, 2)), [[5, 7], [13, 15]])
    assert resize_nearest(np.ones((300, 500), bool)).shape == (256, 256)
    with pytest.raises(ValueError, match="2D"):
        resize_nearest(np.zeros((2, 2, 2)))


def test_paper_scores_skips_empty_ground_truth():
    gt_a = _square((8, 8), 0, 4, 0, 4)           # 16 px
    pred_a = _square((8, 8), 0, 4, 0, 2)         # 8 px inside -> dice 2*8/24, recall .5
    gt_b = np.zeros((8, 8), int)                 # skipped although the prediction is wrong
    pred_b = np.ones((8, 8), int)
    gt_c = _square((8, 8), 2, 4, 2, 4)
    pred_c = gt_c.copy()                         # perfect
    out = paper_scores([pred_a, pred_b, pred_c], [gt_a, gt_b, gt_c])
    assert out["n_images"] == 2 and out["n_skipped"] == 1
    assert out["dice"] == pytest.approx((16 / 24 + 1) / 2)
    assert out["iou"] == pytest.approx((0.5 + 1) / 2)
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(0.75)


def test_paper_scores_errors():
    with pytest.raises(ValueError, match="every ground truth is empty"):
        paper_scores([np.ones((2, 2))], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        paper_scores([np.ones((2, 2))] * 2, [np.ones((2, 2))])


# ---------------------------------------------------------------- instance scores

def _two_squares_case():
    """GT: two 4x4 squares. Prediction: one good match, the other split in halves, one false positive."""
    gt = np.zeros((12, 12), dtype=np.uint16)
    gt[0:4, 0:4] = 1            # G1, 16 px
    gt[6:10, 6:10] = 2          # G2, 16 px
    pred = np.zeros((12, 12), dtype=np.int32)
    pred[0:4, 0:3] = 1          # A: 12 px inside G1 -> IoU 12/16 = 0.75 (match)
    pred[6:10, 6:8] = 2         # B: left half of G2 -> IoU 8/16 = 0.5 (not > 0.5: no match)
    pred[6:10, 8:10] = 3        # C: right half of G2 -> IoU 0.5 (no match)
    pred[0:2, 10:12] = 4        # D: 4 px, touches nothing (false positive)
    return pred, gt


def test_instance_scores_hand_computed():
    pred, gt = _two_squares_case()
    s = instance_scores(pred, gt)
    # TP = 1 (A-G1); n_pred = 4, n_gt = 2
    # precision = 1/4, recall = 1/2, F1 = 2*1 / (4 + 2) = 1/3
    assert s["n_pred"] == 4 and s["n_gt"] == 2
    assert s["precision_50"] == pytest.approx(1 / 4)
    assert s["recall_50"] == pytest.approx(1 / 2)
    assert s["f1_50"] == pytest.approx(1 / 3)
    # AJI: G1 -> A: inter 12, union 16.  G2 -> B (tie with C, lower label first): inter 8, union 16.
    # Unused predictions C (8 px) and D (4 px) join the denominator: 20 / (16 + 16 + 8 + 4) = 5/11
    assert s["aji"] == pytest.approx(20 / 44)


def test_instance_scores_ignores_label_values():
    pred, gt = _two_squares_case()
    remap_p = np.array([0, 900, 7, 70000, 3], dtype=np.int64)
    remap_g = np.array([0, 2, 1], dtype=np.uint16)
    assert instance_scores(remap_p[pred], remap_g[gt]) == instance_scores(pred, gt)
    # huge ids take the sort-based relabelling path
    huge = np.where(pred > 0, pred.astype(np.int64) + 10**12, 0)
    assert instance_scores(huge, gt) == instance_scores(pred, gt)


def test_instance_scores_aji_prediction_used_twice():
    # one prediction covering two gt objects: Kumar's AJI counts its area in both unions
    gt = np.zeros((4, 8), dtype=np.int32)
    gt[:, 0:3] = 1      # 12 px
    gt[:, 5:8] = 2      # 12 px
    pred = np.ones((4, 8), dtype=np.int32)  # 32 px
    s = instance_scores(pred, gt)
    assert s["aji"] == pytest.approx((12 + 12) / (32 + 32))
    assert s["f1_50"] == 0.0  # IoU 12/32 each


def test_instance_scores_gt_without_overlap_and_empty_cases():
    gt = _square((6, 6), 0, 2, 0, 2)
    pred = _square((6, 6), 4, 6, 4, 6)
    s = instance_scores(pred, gt)
    assert s["aji"] == 0.0 and s["f1_50"] == 0.0
    empty = np.zeros((6, 6), int)
    assert instance_scores(empty, empty) == dict(f1_50=1.0, precision_50=1.0, recall_50=1.0, aji=1.0,
                                                 n_pred=0, n_gt=0)
    s = instance_scores(empty, gt)
    assert (s["f1_50"], s["precision_50"], s["recall_50"], s["aji"]) == (0.0, 0.0, 0.0, 0.0)
    s = instance_scores(gt, empty)
    assert (s["f1_50"], s["aji"], s["n_pred"], s["n_gt"]) == (0.0, 0.0, 1, 0)


def test_instance_scores_perfect_and_dense_sparse_paths_agree(monkeypatch, rng):
    # random blobs: compare the dense (bincount) and the sparse (unique) overlap tables
    from scipy import ndimage as ndi
    gt, _ = ndi.label(ndi.gaussian_filter(rng.random((96, 96)), 2) > 0.52)
    pred, _ = ndi.label(ndi.gaussian_filter(rng.random((96, 96)), 2) > 0.5)
    assert instance_scores(gt, gt)["aji"] == 1.0 and instance_scores(gt, gt)["f1_50"] == 1.0
    dense = instance_scores(pred, gt)
    monkeypatch.setattr(metrics, "_DENSE_PAIRS_LIMIT", 0)
    assert instance_scores(pred, gt) == dense


def test_instance_scores_rejects_bad_labels():
    with pytest.raises(ValueError, match=">= 0"):
        instance_scores(np.array([[-1, 0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="integers"):
        instance_scores(np.array([[0.5, 0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        instance_scores(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_instance_scores_fast_with_many_nuclei():
    # ~1,000 objects on a 1024 x 1024 image must score well within a second
    gt = np.zeros((1024, 1024), dtype=np.int32)
    pred = np.zeros_like(gt)
    k = 0
    for r in range(0, 1024, 32):
        for c in range(0, 1024, 32):
            k += 1
            gt[r + 4:r + 24, c + 4:c + 24] = k
            pred[r + 6:r + 26, c + 4:c + 24] = k + 5
    start = time.perf_counter()
    s = instance_scores(pred, gt)
    assert time.perf_counter() - start < 2.0
    assert s["n_gt"] == s["n_pred"] == 1024
    assert s["f1_50"] == 1.0  # IoU 360/440 each
    assert s["aji"] == pytest.approx(360 / 440)


# ---------------------------------------------------------------- summarise

def test_summarise_means_and_ignores_text():
    rows = [dict(name="a", dice=1.0, n_gt=2), dict(name="b", dice=0.5, n_gt=5)]
    assert summarise(rows) == {"n_images": 2, "dice": 0.75, "n_gt": 3.5}
    assert summarise([]) == {"n_images": 0}
    with pytest.raises(ValueError, match="row 1"):
        summarise([dict(dice=1.0), dict(iou=1.0)])


def test_metrics_does_not_import_torch():
    code = "import napari_litenext.metrics, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _reference_instance_scores(pred, gt):
    """Plain loops over object pairs, straight from the definitions."""
    g_ids = [i for i in np.unique(gt) if i]
    p_ids = [j for j in np.unique(pred) if j]
    iou = np.zeros((len(g_ids), len(p_ids)))
    for a, i in enumerate(g_ids):
        for b, j in enumerate(p_ids):
            inter = np.sum((gt == i) & (pred == j))
            iou[a, b] = inter / np.sum((gt == i) | (pred == j))
    tp = int(np.sum(iou > 0.5))
    inter_sum = union_sum = 0
    used = set()
    for a, i in enumerate(g_ids):
        if len(p_ids) and iou[a].max() > 0:
            j = p_ids[int(np.argmax(iou[a]))]
            used.add(j)
            inter_sum += np.sum((gt == i) & (pred == j))
            union_sum += np.sum((gt == i) | (pred == j))
        else:
            union_sum += np.sum(gt == i)
    union_sum += sum(np.sum(pred == j) for j in p_ids if j not in used)
    return tp, len(p_ids), len(g_ids), inter_sum / union_sum


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_instance_scores_match_plain_reference(seed):
    from scipy import ndimage as ndi
    r = np.random.default_rng(seed)
    gt, _ = ndi.label(ndi.gaussian_filter(r.random((64, 64)), 1.5) > 0.53)
    # prediction: the gt shifted by a pixel, some of it cut away, plus extra blobs -> matches,
    # merges, splits and false positives
    shifted = np.roll(gt > 0, 1, axis=1) & (r.random(gt.shape) > 0.15)
    pred, _ = ndi.label(shifted | (ndi.gaussian_filter(r.random((64, 64)), 1.5) > 0.56))
    tp, n_p, n_g, aji = _reference_instance_scores(pred, gt)
    assert 0 < tp < min(n_p, n_g) and 0.2 < aji < 0.9
    s = instance_scores(pred, gt)
    assert (s["n_pred"], s["n_gt"]) == (n_p, n_g)
    assert s["f1_50"] == pytest.approx(2 * tp / (n_p + n_g))
    assert s["aji"] == pytest.approx(aji)


# ---------------------------------------------------------------- instance errors

NO_ERRORS = {"fragments": 0, "merges": 0, "splits": 0, "missed": 0}


def test_instance_errors_fragment_is_an_unmatched_speck_on_background():
    truth = _square((12, 12), 0, 4, 0, 4)
    pred = _square((12, 12), 0, 4, 0, 4, value=3)
    _square((12, 12), 8, 10, 8, 10, value=7, out=pred)  # speck on background
    assert instance_errors(pred, truth) == {**NO_ERRORS, "fragments": 1}
    # a small unmatched piece inside a nucleus is not a fragment (it lies on foreground)
    pred = _square((12, 12), 0, 4, 0, 1)
    assert instance_errors(pred, truth) == {**NO_ERRORS, "missed": 1}


def test_instance_errors_iou_threshold_decides_what_matches():
    truth = _square((6, 8), 0, 2, 0, 2)      # 4 px
    pred = _square((6, 8), 0, 2, 0, 5)       # 10 px over it, 6 on background: IoU 0.4
    assert instance_errors(pred, truth)["fragments"] == 1
    assert instance_errors(pred, truth, iou=0.4)["fragments"] == 0
    with pytest.raises(ValueError, match="iou"):
        instance_errors(pred, truth, iou=0)


def test_instance_errors_merge_is_one_prediction_over_two_nuclei():
    truth = _square((5, 9), 1, 4, 0, 3, value=1)
    _square((5, 9), 1, 4, 4, 7, value=2, out=truth)
    pred = _square((5, 9), 1, 4, 0, 7)     # 21 px: 9 + 9 on nuclei, 3 on the gap
    assert instance_errors(pred, truth) == {**NO_ERRORS, "merges": 1}
    # covering exactly half of the second nucleus is not "more than half"
    truth2 = _square((4, 8), 0, 4, 0, 2, value=1)
    _square((4, 8), 0, 4, 4, 8, value=2, out=truth2)   # 16 px
    pred2 = _square((4, 8), 0, 4, 0, 6)                 # all of 1, 8 of 16 px of 2
    assert instance_errors(pred2, truth2)["merges"] == 0


def test_instance_errors_split_needs_two_pieces_of_at_least_20_percent():
    truth = _square((4, 10), 0, 4, 0, 10, value=5)     # 40 px
    halves = _square((4, 10), 0, 4, 0, 5, value=1)
    _square((4, 10), 0, 4, 5, 10, value=2, out=halves)
    assert instance_errors(halves, truth) == {**NO_ERRORS, "splits": 1}
    exactly_20 = _square((4, 10), 0, 4, 0, 2, value=1)  # 8 of 40 px
    _square((4, 10), 0, 4, 2, 10, value=2, out=exactly_20)
    assert instance_errors(exactly_20, truth)["splits"] == 1
    sliver = _square((4, 10), 0, 4, 0, 1, value=1)      # 4 of 40 px
    _square((4, 10), 0, 4, 1, 10, value=2, out=sliver)
    assert instance_errors(sliver, truth)["splits"] == 0


def test_instance_errors_missed_counts_all_predicted_pixels_together():
    truth = _square((4, 20), 0, 4, 0, 10, value=1)     # 40 px
    _square((4, 20), 0, 4, 10, 20, value=2, out=truth)
    pred = _square((4, 20), 0, 4, 0, 3, value=1)       # 12 px (30 %) + 12 px (30 %) of nucleus 1
    _square((4, 20), 0, 4, 7, 10, value=2, out=pred)
    _square((4, 20), 0, 4, 10, 14, value=3, out=pred)  # 16 px (40 %) of nucleus 2
    errors = instance_errors(pred, truth)
    assert errors["missed"] == 1          # nucleus 2 only; nucleus 1 is 60 % covered
    assert errors["splits"] == 1          # nucleus 1, two pieces of 30 %
    assert instance_errors(np.zeros_like(truth), truth) == {**NO_ERRORS, "missed": 2}
    assert instance_errors(np.zeros((3, 3), int), np.zeros((3, 3), int)) == NO_ERRORS


def _reference_instance_errors(pred, truth, iou=0.5):
    """Object by object with boolean masks: slow but plain."""
    p_ids = [i for i in np.unique(pred) if i]
    t_ids = [i for i in np.unique(truth) if i]
    out = dict(NO_ERRORS)
    for j in p_ids:
        pm = pred == j
        ious = [np.sum(pm & (truth == i)) / np.sum(pm | (truth == i)) for i in t_ids]
        if max(ious, default=0) < iou and np.sum(pm & (truth == 0)) > 0.5 * pm.sum():
            out["fragments"] += 1
        out["merges"] += sum(np.sum(pm & (truth == i)) > 0.5 * np.sum(truth == i) for i in t_ids) >= 2
    for i in t_ids:
        tm = truth == i
        out["splits"] += sum(np.sum(tm & (pred == j)) >= 0.2 * tm.sum() for j in p_ids) >= 2
        out["missed"] += np.sum(tm & (pred > 0)) < 0.5 * tm.sum()
    return out


@pytest.mark.parametrize("seed", [4, 5])
def test_instance_errors_match_plain_reference_on_both_table_paths(monkeypatch, seed):
    from scipy import ndimage as ndi
    r = np.random.default_rng(seed)
    truth, _ = ndi.label(ndi.gaussian_filter(r.random((64, 64)), 1.5) > 0.53)
    pred, _ = ndi.label(np.roll(truth > 0, 2, axis=0) & (r.random(truth.shape) > 0.2)
                        | (ndi.gaussian_filter(r.random((64, 64)), 1.5) > 0.56))
    pred = pred * 3   # ids need not be consecutive
    expected = _reference_instance_errors(pred, truth)
    assert sum(expected.values()) > 0
    assert instance_errors(pred, truth) == expected
    monkeypatch.setattr(metrics, "_DENSE_PAIRS_LIMIT", 0)
    assert instance_errors(pred, truth) == expected
    with pytest.raises(ValueError, match="shape"):
        instance_errors(pred[:10], truth)
