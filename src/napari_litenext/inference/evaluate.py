"""Scoring a model against ground truth: folders of images and masks, or label arrays in memory.

Folders are paired by ``io.pairing`` (the rule training uses: ``cell7.png`` pairs with
``cell7.tif``, ``cell7_mask.png`` or ``cell7_labels.tif``); every problem is reported together in
one error before anything is predicted.

Masks may be binary ({0, 1}, {0, 255}) or label images; foreground is every value > 0. Object
scores (``instances=True``) need labels: a binary mask is split into its 4-connected components,
and the result says so once.

Protocols:
* ``"native"``: each image predicted as ``predict`` would (the model's own tile/resize settings),
  scored at the image's size; every image counts (see ``metrics`` for empty masks);
* ``"paper"``: the image is resized to 256 x 256 (bilinear with antialiasing, as training resizes,
  keeping the pixel type so that normalisation is unchanged), predicted there, and compared with
  the mask resized to 256 x 256 by nearest neighbour; images whose resized mask is empty are
  skipped, as in the paper, and neither a minimum object size nor adaptive post-processing is
  applied (the paper scores the thresholded network output); nor is an object size (the image is
  predicted at 256 x 256): a number given for it is refused, and ``"auto"`` or the model's value
  is recorded as not applied.

An object size (``InferenceConfig.object_size``) is not applied either for a model in resize mode
(as ``predict``); a number given there is refused before any image is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import check_inference_settings
from ..errors import Cancelled, EvaluationError, InputError
from ..progress import Progress, run_to_end
from ..metrics import BINARY_KEYS, INSTANCE_KEYS, PAPER_SIZE, binary_scores, instance_scores, resize_nearest, \
    summarise
from ..io.pairing import check_sizes, match_folders, problems_message
from .evaluation_result import EvaluationResult
from .preprocess import select_channels
from .resize import resize_keep_dtype

if TYPE_CHECKING:  # pragma: no cover
    from ..network.model import LiteNeXt

__all__ = ["EvaluationError", "EvaluationResult", "pair_files", "evaluate_pairs", "evaluate", "evaluate_arrays",
           "PROTOCOLS"]

PROTOCOLS = ("native", "paper")
_LABELLED_NOTE = ("binary masks were split into 4-connected components for object scores; touching "
                  "objects in them count as one")


# ---------------------------------------------------------------- pairing

def pair_files(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Pair images with masks by name (``io.pairing``) and check their sizes from the file headers.

    Returns:
        ``(name, image_path, mask_path)`` sorted by name.

    Raises:
        EvaluationError: a folder is missing or holds no images; any unpaired, ambiguous,
            unreadable or size-mismatched files (all listed in one message).
    """
    return _usable_pairs(images_dir, masks_dir, skip_bad=False)[0]


def _usable_pairs(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, skip_bad: bool
                  ) -> tuple[list[tuple[str, Path, Path]], list[dict[str, str]]]:
    """``pair_files``; with ``skip_bad`` the pairs whose headers are unreadable or disagree on size are
    returned apart (as ``EvaluationResult.unusable`` lists them) instead of failing."""
    pairs, problems = match_folders(images_dir, masks_dir)
    usable, unusable = [], []
    for pair in pairs:
        found = check_sizes([pair])
        if found and skip_bad:
            detail = found[0].removeprefix(f"{pair.name}: ")
            unusable.append({"name": pair.name, "file": str(pair.image),
                             "reason": f"{pair.image} with {pair.mask.name}: {detail}"})
        else:
            problems += found
            usable.append((pair.name, pair.image, pair.mask))
    if problems:
        raise EvaluationError(problems_message(problems, images_dir, masks_dir))
    return usable, unusable


def _checked_pair(image_path: Path, mask_path: Path, channel: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The image and its mask, read and checked as training checks them.

    Raises:
        InputError: a message naming the file at fault (unreadable, bad mask values, a stack, ...).
    """
    from ..io.images import check_mask, read_image, read_mask

    gt = check_mask(read_mask(mask_path), str(mask_path), EvaluationError)
    image = read_image(image_path)
    try:
        select_channels(image, channel)  # a stack or an unchosen channel, said in evaluate's terms
    except InputError as exc:
        raise EvaluationError(f"{image_path}: {exc}") from None
    return image, gt


# ---------------------------------------------------------------- scoring

def _is_binary(mask: np.ndarray) -> bool:
    fg = mask[mask > 0]
    return fg.size == 0 or fg.min() == fg.max()


def _as_labels(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Instance labels and whether they had to be made from a binary mask."""
    if mask.dtype == bool or _is_binary(mask):
        from scipy import ndimage as ndi

        labels, _ = ndi.label(mask > 0, output=np.int32)
        return labels, True
    return mask, False


def _score(pred: np.ndarray, gt: np.ndarray, instances: bool) -> tuple[dict[str, Any], bool]:
    """Scores of one pair and whether the ground truth had to be labelled."""
    row: dict[str, Any] = dict(binary_scores(pred, gt))
    labelled = False
    if instances:
        gt_labels, labelled = _as_labels(gt)
        pred_labels, _ = _as_labels(pred)
        row.update(instance_scores(pred_labels, gt_labels))
    return row, labelled


def evaluate_arrays(pred_labels_list: Sequence[np.ndarray], gt_labels_list: Sequence[np.ndarray],
                    instances: bool = False, names: Sequence[str] | None = None,
                    skip_empty: bool = False) -> EvaluationResult:
    """Score predictions already in memory (e.g. two napari Labels layers); no model involved.

    Args:
        pred_labels_list: per image, a binary mask or label image (> 0 = foreground). A binary
            prediction is split into connected components for object scores.
        gt_labels_list: per image, the ground truth, same shape as its prediction.
        instances: also compute object scores (F1 at IoU 0.5, AJI).
        names: per image, for the rows; default ``"0"``, ``"1"``, ...
        skip_empty: leave out images whose ground truth is empty (the paper's rule).

    Raises:
        ValueError: the lists differ in length, a pair differs in shape, or nothing is left to score.
    """
    preds, gts = list(pred_labels_list), list(gt_labels_list)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths; give one per image")
    names = [str(i) for i in range(len(preds))] if names is None else [str(n) for n in names]
    if len(names) != len(preds):
        raise ValueError(f"got {len(names)} names for {len(preds)} images")
    rows, skipped, labelled = [], [], False
    for name, pred, gt in zip(names, preds, gts):
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"{name}: prediction is {pred.shape} but ground truth is {gt.shape}")
        if skip_empty and not np.any(gt > 0):
            skipped.append(name)
            continue
        scores, was_binary = _score(pred, gt, instances)
        labelled |= was_binary
        rows.append({"name": name, **scores})
    if not rows:
        raise ValueError("no image left to score: every ground truth is empty")
    return EvaluationResult(rows, _means(rows), skipped, {"instances": bool(instances)},
                            [_LABELLED_NOTE] if labelled else [])


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in (*BINARY_KEYS, *INSTANCE_KEYS) if k in rows[0]]
    return summarise([{k: r[k] for k in keys} for r in rows])


# ---------------------------------------------------------------- with a model

def _load_model(source: str | os.PathLike, device: Any) -> Any:
    from ..network.registry import load_model

    return load_model(source, device=device)


def _predict_labels(image: np.ndarray, model: Any, *, instances: bool, threshold: float | None,
                    device: Any, channel: int | None, should_stop: Callable[[], bool] | None,
                    min_size: int | None = None, adaptive: bool | None = None,
                    object_size: float | str | None = None) -> np.ndarray:
    """Labels for one image exactly as ``predict`` makes them (a seam for tests)."""
    from .predict import predict

    return predict(image, model, instances=instances, threshold=threshold, device=device, channel=channel,
                   should_stop=should_stop, min_size=min_size, adaptive=adaptive, object_size=object_size).labels


_PAPER_REASON = ("with the paper protocol (images are predicted at 256 x 256)",
                 "use object size 0 (off), or protocol native")


def _object_size_plan(model: Any, used: Any, requested: Any, protocol: str) -> tuple[Any, Any]:
    """The object size to pass to ``predict`` and the one to record, from the resolved settings.

    Where it cannot be applied (paper protocol, resize mode) ``predict`` gets 0 and the record says
    why (``object_size.object_size_not_applied``).

    Raises:
        SettingsError: a number given where it cannot be applied; an object size for a model that
            does not record its trained object size.
    """
    from .object_size import check_object_size, object_size_not_applied

    if not used.object_size:
        return requested, used.object_size
    if protocol == "paper":
        return 0, object_size_not_applied(requested, *_PAPER_REASON)
    if used.mode == "resize":
        return 0, object_size_not_applied(requested, "in resize mode", "use object size 0 (off), or mode tile")
    check_object_size(model, used)
    return requested, used.object_size


def _progress(stage: str, done: int, total: int, message: str = "") -> Progress:
    return Progress(stage, done, total, message)


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """The paper protocol's input: H x W or H x W x C resized to size x size, keeping the dtype."""
    if image.ndim not in (2, 3):
        raise EvaluationError(f"the paper protocol needs 2D images (H x W or H x W x C), got shape {image.shape}")
    return resize_keep_dtype(image, size, size)


def evaluate_pairs(model: LiteNeXt | str | os.PathLike, images: str | os.PathLike, masks: str | os.PathLike, *,
                   instances: bool = False, protocol: str = "native", threshold: float | None = None,
                   min_size: int | None = None, adaptive: bool | None = None,
                   object_size: float | str | None = None, device: Any = None, channel: int | None = None,
                   should_stop: Callable[[], bool] | None = None, skip_bad: bool = False
                   ) -> Generator[Progress, None, EvaluationResult]:
    """Predict every image of a folder and score it against its mask, step by step.

    Args:
        model: a loaded LiteNeXt, or a bundled model name or checkpoint path (see ``load_model``).
        images: folder of images (PNG, JPEG, BMP, TIFF).
        masks: folder of masks paired by name (module docstring).
        instances: also compute object scores (F1 at IoU 0.5, AJI).
        protocol: ``"native"`` or ``"paper"`` (module docstring).
        threshold, min_size, adaptive, object_size: None uses the model's (as ``predict``); the
            paper protocol uses min_size 0, adaptive False and no object size (module docstring).
        device: torch device; None picks one.
        channel: channel to segment in multichannel images (as ``predict``).
        should_stop: returns True to cancel; ``predict.Cancelled`` is raised.
        skip_bad: leave out pairs that cannot be read or scored (listed in the result's
            ``unusable``, each with its file and the reason) instead of stopping at the first.

    Yields:
        ``Progress("evaluate", done, total, name)`` before each image and once at the end.

    Returns:
        The ``EvaluationResult`` (via ``StopIteration.value``; ``evaluate`` does this for you).

    Raises:
        SettingsError: a setting out of range; an object size that cannot be applied (module
            docstring) or for a model that does not record its trained object size.
        EvaluationError: unknown protocol, pairing problems, nothing left to score, or (unless
            ``skip_bad``) a pair that cannot be used: an unreadable file, a mask with NaN,
            fractional or negative values (checked as training checks them), an image that cannot
            be segmented, a prediction whose size differs from its mask. The message names the file.
    """
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    paper = protocol == "paper"
    # The paper scores the thresholded network output: no minimum object size, no adaptive rules there.
    overrides = {"threshold": threshold, "instances": bool(instances), "min_size": 0 if paper else min_size,
                 "adaptive": False if paper else adaptive, "object_size": object_size}
    check_inference_settings(**overrides)  # before any file is read
    if paper and object_size is not None:
        from .object_size import object_size_not_applied

        object_size_not_applied(object_size, *_PAPER_REASON)  # a number is refused before any file is read
    pairs, unusable = _usable_pairs(images, masks, skip_bad)
    if isinstance(model, (str, os.PathLike)):
        model = _load_model(model, device)
    used = model.inference.with_overrides(**overrides)
    overrides["object_size"], recorded_size = _object_size_plan(model, used, object_size, protocol)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    notes: list[str] = []
    total = len(pairs)
    for done, (name, image_path, mask_path) in enumerate(pairs):
        if should_stop is not None and should_stop():
            raise Cancelled("evaluation cancelled")
        yield _progress("evaluate", done, total, name)
        try:
            image, gt = _checked_pair(image_path, mask_path, channel)
            if protocol == "paper":
                gt = resize_nearest(gt, (PAPER_SIZE, PAPER_SIZE))
                if not np.any(gt > 0):
                    skipped.append(name)
                    continue
                image = _resize_image(image, PAPER_SIZE)
            try:
                pred = _predict_labels(image, model, device=device, channel=channel, should_stop=should_stop,
                                       **overrides)
            except InputError as exc:
                raise EvaluationError(f"{image_path}: {exc}") from None
            if pred.shape != gt.shape:
                raise EvaluationError(f"{image_path}: prediction is {pred.shape} but the mask is {gt.shape}; "
                                      "evaluate 2D images only (give channel= for multichannel images)")
        except InputError as exc:  # ImageReadError, EvaluationError
            reason = str(exc)
            if not reason.startswith((str(image_path), str(mask_path))):
                reason = f"{image_path}: {reason}"
            bad = {"name": name, "file": reason.split(": ", 1)[0], "reason": reason}
            if not skip_bad:
                error = EvaluationError(f"{reason}; fix or remove that pair")
                error.bad_pairs = [bad]  # lets the command line offer its option to skip such pairs
                raise error from None
            unusable.append(bad)
            continue
        scores, labelled = _score(pred, gt, instances)
        if labelled and _LABELLED_NOTE not in notes:
            notes.append(_LABELLED_NOTE)
            yield _progress("evaluate", done, total, f"note: {_LABELLED_NOTE}")
        rows.append({"name": name, "image": str(image_path), "mask": str(mask_path), **scores})
    yield _progress("evaluate", total, total, "done")
    if not rows and unusable:
        raise EvaluationError(f"no pair could be scored: {len(unusable)} unusable ("
                              + "; ".join(u["reason"] for u in unusable[:5]) + ")")
    if not rows:
        raise EvaluationError(f"all {total} ground-truth masks are empty at {PAPER_SIZE}x{PAPER_SIZE}; the paper "
                              "protocol skips those: use --protocol native")
    settings = {
        "protocol": protocol,
        "instances": used.instances,
        "threshold": used.threshold,
        "min_size": used.min_size,
        "adaptive": used.adaptive,
        "object_size": recorded_size,
        "model": model.card.name,
        "model_sha256": model.sha256 or None,
        "images": str(images),
        "masks": str(masks),
    }
    return EvaluationResult(rows, _means(rows), skipped, settings, notes, unusable)


def evaluate(model: LiteNeXt | str | os.PathLike, images: str | os.PathLike, masks: str | os.PathLike,
             **kwargs: Any) -> EvaluationResult:
    """``evaluate_pairs`` run to the end; same arguments, returns its ``EvaluationResult``."""
    return run_to_end(evaluate_pairs(model, images, masks, **kwargs))
