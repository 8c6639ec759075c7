"""Segmentation quality: pixel scores, the paper's protocol, and object (instance) scores.

numpy and scipy only, so that scoring works without torch (e.g. in a napari widget comparing two
label layers).

Conventions (one rule covers every empty case): a ratio whose numerator and denominator are both
zero is **1 when prediction and ground truth are both empty, otherwise 0**. So:

* both empty: dice = iou = precision = recall = 1 (nothing to find, nothing found);
* ground truth empty, prediction not: dice = iou = precision = 0, recall (0/0) = 0;
* prediction empty, ground truth not: dice = iou = recall = 0, precision (0/0) = 0.

The same rule applies to object scores (no objects on either side gives F1 = AJI = 1). The paper's
protocol (``paper_scores``) avoids the question by skipping images whose ground truth is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["binary_scores", "instance_scores", "instance_errors", "summarise", "paper_scores", "resize_nearest",
           "PAPER_SIZE", "BINARY_KEYS", "INSTANCE_KEYS", "ERROR_KEYS"]

PAPER_SIZE = 256
BINARY_KEYS = ("dice", "iou", "precision", "recall")
INSTANCE_KEYS = ("f1_50", "precision_50", "recall_50", "aji", "n_pred", "n_gt")
ERROR_KEYS = ("fragments", "merges", "splits", "missed")

# Above this many (gt, pred) label pairs the overlap table is built from the overlapping pixels
# only (sort-based) instead of a dense bincount, which would need (n_gt+1)*(n_pred+1) counters.
_DENSE_PAIRS_LIMIT = 1 << 22


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has shape {pred.shape} but ground truth has shape {gt.shape}; "
                         "resize one to the other (nearest neighbour for masks) before scoring")


def binary_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and recall of one binary prediction.

    Args:
        pred: predicted mask, any shape; nonzero is foreground (so label images work too).
            Threshold probabilities first.
        gt: ground truth, same shape; nonzero is foreground ({0,1}, {0,255} and labels all work).

    Returns:
        ``{"dice", "iou", "precision", "recall"}`` as floats in [0, 1]; empty cases as in the
        module docstring.

    Raises:
        ValueError: the shapes differ.
    """
    p = np.asarray(pred)
    g = np.asarray(gt)
    _check_same_shape(p, g)
    p = p.astype(bool, copy=False)
    g = g.astype(bool, copy=False)
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    tp = int(np.count_nonzero(p & g))
    empty = n_p == 0 and n_g == 0
    return {
        "dice": _ratio(2 * tp, n_p + n_g, empty),
        "iou": _ratio(tp, n_p + n_g - tp, empty),
        "precision": _ratio(tp, n_p, empty),
        "recall": _ratio(tp, n_g, empty),
    }


def resize_nearest(mask: np.ndarray, shape: tuple[int, int] = (PAPER_SIZE, PAPER_SIZE)) -> np.ndarray:
    """Nearest-neighbour resize of a 2D mask or label image (values are kept, never blended).

    Output pixel i samples input pixel ``floor((i + 0.5) * in / out)``: pixel centres are aligned,
    as in scikit-image and PIL (not OpenCV's INTER_NEAREST, which samples ``floor(i * in / out)``
    and shifts the mask by up to half a pixel).

    Args:
        mask: H x W array of any dtype.
        shape: (height, width) of the result.

    Raises:
        ValueError: ``mask`` is not 2D or ``shape`` is not two positive integers.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"resize_nearest needs a 2D mask, got shape {mask.shape}")
    if len(shape) != 2 or min(int(s) for s in shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape!r}")
    out_h, out_w = (int(s) for s in shape)
    if (out_h, out_w) == mask.shape:
        return mask.copy()
    rows = np.minimum(((np.arange(out_h) + 0.5) * mask.shape[0] / out_h).astype(np.intp), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * mask.shape[1] / out_w).astype(np.intp), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def paper_scores(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> dict[str, float]:
    """The paper's protocol: per-image binary scores, images with empty ground truth skipped, mean.

    The paper resizes each image to 256 x 256 and predicts there, so ``preds`` are already at 256;
    give ``gts`` resized to the same size with ``resize_nearest`` (our choice: the paper does not
    say how its masks were resized; nearest keeps them binary without a second threshold).

    Args:
        preds: binary predictions (nonzero = foreground).
        gts: ground truths, each the same shape as its prediction.

    Returns:
        Means of ``dice``, ``iou``, ``precision``, ``recall`` over the scored images, plus
        ``n_images`` (scored) and ``n_skipped`` (empty ground truth).

    Raises:
        ValueError: the two sequences have different lengths, a pair differs in shape, or every
            ground truth is empty.
    """
    rows = []
    skipped = 0
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths; give one per image")
    for pred, gt in zip(preds, gts):
        if not np.any(gt):
            _check_same_shape(np.asarray(pred), np.asarray(gt))
            skipped += 1
            continue
        rows.append(binary_scores(pred, gt))
    if not rows:
        raise ValueError("every ground truth is empty; the paper's protocol skips those, so nothing is left "
                         "to score (use the native protocol)")
    out = summarise(rows)
    out["n_skipped"] = skipped
    return out


def _compact_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel to 0..n (0 stays background) so overlap tables are as small as the object count."""
    if labels.dtype == bool:
        return labels.astype(np.intp), int(labels.any())
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise ValueError(f"label images must hold integers, got dtype {labels.dtype} with fractional "
                             "values; threshold probabilities and label the mask first")
        labels = labels.astype(np.int64)
    if labels.size == 0:
        return labels.astype(np.intp), 0
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"label images must be >= 0 (0 = background), found {lo}")
    if hi <= 4 * labels.size + 1024:
        # Lookup table: linear time, no sort.
        present = np.bincount(labels.ravel(), minlength=hi + 1) > 0
        present[0] = False
        lut = np.cumsum(present, dtype=np.intp)
        lut[~present] = 0
        return lut[labels], int(lut[-1])
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:  # no background pixel: shift so that ids start at 1
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.intp), int(np.count_nonzero(ids))


def _overlaps(gt: np.ndarray, pred: np.ndarray, n_gt: int, n_pred: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse overlap table: (gt index, pred index, pixel count) for each overlapping pair, 0-based."""
    both = (gt > 0) & (pred > 0)
    g = gt[both].astype(np.int64) - 1
    p = pred[both].astype(np.int64) - 1
    key = g * n_pred + p
    if n_gt * n_pred <= _DENSE_PAIRS_LIMIT:
        counts = np.bincount(key, minlength=n_gt * n_pred)
        key = np.flatnonzero(counts)
        counts = counts[key]
    else:
        key, counts = np.unique(key, return_counts=True)
    return key // max(n_pred, 1), key % max(n_pred, 1), counts


def instance_scores(pred_labels: np.ndarray, gt_labels: np.ndarray) -> dict[str, float]:
    """Object-level scores of one label image against ground-truth labels.

    * Matching: a predicted and a ground-truth object match when their IoU is **> 0.5**; at that
      threshold each object can match at most one other, so the matching is unique without any
      assignment step. ``precision_50 = TP / n_pred``, ``recall_50 = TP / n_gt``,
      ``f1_50 = 2 TP / (n_pred + n_gt)`` (StarDist's and Cellpose's F1 at IoU 0.5).
    * Aggregated Jaccard index (Kumar et al., IEEE TMI 2017): for each ground-truth object G the
      predicted object S with the largest IoU (first label on ties; a prediction may serve several
      ground-truth objects); sum |G & S| over all G, divided by the sum of |G | S| (just |G| when no
      prediction touches G) plus the area of every prediction never chosen.

    Args:
        pred_labels: H x W (or any shape) integer labels, 0 = background; ids need not be consecutive.
        gt_labels: same shape, same convention. Bool arrays count as a single object.

    Returns:
        ``{"f1_50", "precision_50", "recall_50", "aji", "n_pred", "n_gt"}``; no objects on either
        side gives 1 for every score, objects on one side only give 0.

    Raises:
        ValueError: shapes differ, labels are negative or not integers.
    """
    pred = np.asarray(pred_labels)
    gt = np.asarray(gt_labels)
    _check_same_shape(pred, gt)
    gt, n_gt = _compact_labels(gt)
    pred, n_pred = _compact_labels(pred)
    empty = n_gt == 0 and n_pred == 0
    area_g = np.bincount(gt.ravel(), minlength=n_gt + 1)[1:]
    area_p = np.bincount(pred.ravel(), minlength=n_pred + 1)[1:]
    gi, pj, inter = _overlaps(gt, pred, n_gt, n_pred)
    union = area_g[gi] + area_p[pj] - inter
    iou = inter / np.maximum(union, 1)
    tp = int(np.count_nonzero(iou > 0.5))

    # AJI: best prediction per ground-truth object. Pairs are sorted by (gt, pred), so a stable
    # sort on -iou within each gt keeps the smallest pred label first on ties.
    total_inter = 0
    total_union = int(area_g.sum())  # every gt contributes at least its own area
    used = np.zeros(n_pred, dtype=bool)
    if inter.size:
        order = np.lexsort((-iou, gi))
        first = np.ones(order.size, dtype=bool)
        first[1:] = gi[order][1:] != gi[order][:-1]
        best = order[first]
        total_inter = int(inter[best].sum())
        # replace |G| by |G | S| for the gts that have a best prediction
        total_union += int((union[best] - area_g[gi[best]]).sum())
        used[pj[best]] = True
    total_union += int(area_p[~used].sum())

    return {
        "f1_50": _ratio(2 * tp, n_pred + n_gt, empty),
        "precision_50": _ratio(tp, n_pred, empty),
        "recall_50": _ratio(tp, n_gt, empty),
        "aji": _ratio(total_inter, total_union, empty),
        "n_pred": n_pred,
        "n_gt": n_gt,
    }


def _contingency(pred: np.ndarray, truth: np.ndarray, n_pred: int, n_true: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred label, true label, pixel count) of every non-empty cell, background (0) included."""
    key = pred.ravel().astype(np.int64) * (n_true + 1) + truth.ravel()
    if (n_pred + 1) * (n_true + 1) <= _DENSE_PAIRS_LIMIT:
        counts = np.bincount(key, minlength=(n_pred + 1) * (n_true + 1))
        key = np.flatnonzero(counts)
        counts = counts[key]
    else:
        key, counts = np.unique(key, return_counts=True)
    return key // (n_true + 1), key % (n_true + 1), counts


def instance_errors(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> dict[str, int]:
    """Counts of the typical instance-segmentation mistakes in one label image.

    * ``fragments``: predicted objects that match no true object at IoU >= ``iou`` and lie mostly
      (more than half of their pixels) on true background: false-positive specks.
    * ``merges``: predicted objects covering more than half of each of at least two true objects
      (one prediction over several nuclei).
    * ``splits``: true objects of which at least two different predicted objects each cover
      >= 20 % (one nucleus cut into pieces).
    * ``missed``: true objects less than half covered by predicted foreground (all predicted
      objects together).

    One object can count in several ways (a merge may also leave a true object "split").

    Args:
        pred: predicted labels, any shape (usually H x W), integers >= 0, 0 = background; ids need
            not be consecutive. Bool arrays count as one object.
        truth: ground-truth labels, same shape and convention.
        iou: IoU a prediction needs with some true object not to be a fragment, in (0, 1].

    Returns:
        ``{"fragments", "merges", "splits", "missed"}`` as ints.

    Raises:
        ValueError: shapes differ, labels are negative or not integers, or ``iou`` is not in (0, 1].
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    p_arr, t_arr = np.asarray(pred), np.asarray(truth)
    _check_same_shape(p_arr, t_arr)
    p_lab, n_pred = _compact_labels(p_arr)
    t_lab, n_true = _compact_labels(t_arr)
    p, t, c = _contingency(p_lab, t_lab, n_pred, n_true)
    area_p = np.bincount(p, weights=c, minlength=n_pred + 1)
    area_t = np.bincount(t, weights=c, minlength=n_true + 1)
    on_bg = np.bincount(p[t == 0], weights=c[t == 0], minlength=n_pred + 1)

    obj = (p > 0) & (t > 0)
    p, t, c = p[obj], t[obj], c[obj]
    pair_iou = c / (area_p[p] + area_t[t] - c)
    matched = np.zeros(n_pred + 1, dtype=bool)
    matched[p[pair_iou >= iou]] = True
    fragments = ~matched[1:] & (on_bg[1:] > 0.5 * area_p[1:])

    covers_half = c > 0.5 * area_t[t]
    merges = np.bincount(p[covers_half], minlength=n_pred + 1) >= 2
    splits = np.bincount(t[c >= 0.2 * area_t[t]], minlength=n_true + 1) >= 2
    covered = np.bincount(t, weights=c, minlength=n_true + 1)
    missed = covered[1:] < 0.5 * area_t[1:]
    return {"fragments": int(fragments.sum()), "merges": int(merges.sum()), "splits": int(splits.sum()),
            "missed": int(missed.sum())}


def summarise(rows: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Mean of every numeric entry over per-image score dicts, plus ``n_images``.

    Non-numeric entries (e.g. a file name) are ignored; counts such as ``n_pred`` are averaged too.
    An empty list gives ``{"n_images": 0}``.

    Raises:
        ValueError: the dicts do not all have the same numeric keys.
    """
    if not rows:
        return {"n_images": 0}
    keys = [k for k, v in rows[0].items() if _is_number(v)]
    for i, row in enumerate(rows):
        have = [k for k, v in row.items() if _is_number(v)]
        if sorted(have) != sorted(keys):
            raise ValueError(f"row {i} has scores {sorted(have)} but row 0 has {sorted(keys)}; "
                             "summarise rows of one kind together")
    out: dict[str, float] = {"n_images": len(rows)}
    for k in keys:
        out[k] = float(np.mean([float(row[k]) for row in rows]))  # type: ignore[arg-type]
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
