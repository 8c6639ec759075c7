"""Evaluation: pairing files, scoring with a stand-in predictor, both protocols, JSON output."""

from __future__ import annotations

import importlib
import json
import types

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_litenext.inference.evaluate import EvaluationError, evaluate, evaluate_arrays, evaluate_pairs, pair_files
from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.inference.preprocess import InputError
from napari_litenext.progress import run_to_end



def stand_in():
    """A model as evaluation sees it: settings and a card; ``_predict_labels`` is replaced."""
    return types.SimpleNamespace(inference=InferenceConfig(), card=ModelCard(name="stand-in"), sha256="abc")


# the package exposes the function evaluate() under the module's name, so fetch the module itself
ev = importlib.import_module("napari_litenext.inference.evaluate")


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _tif(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)


def _square(shape, r0, r1, c0, c1, value=255, dtype=np.uint8):
    a = np.zeros(shape, dtype=dtype)
    a[r0:r1, c0:c1] = value
    return a


@pytest.fixture
def fake_predict(monkeypatch):
    """A predictor that thresholds the image at 128 (the first channel of colour images).

    Records the images it was given; labels are connected components when instances are asked for.
    """
    seen = []

    def predict_labels(image, model, *, instances, threshold, device, channel, should_stop, min_size=None,
                       adaptive=None, object_size=None):
        seen.append(image)
        plane = image if image.ndim == 2 else image[..., 0]
        mask = plane > (threshold or 0.5) * 255
        if instances:
            from scipy import ndimage as ndi
            return ndi.label(mask, output=np.int32)[0]
        return mask.astype(np.uint8)

    monkeypatch.setattr(ev, "_predict_labels", predict_labels)
    return seen


# ---------------------------------------------------------------- pairing

def test_pair_files_naming_rule(tmp_path):
    img, msk = tmp_path / "images", tmp_path / "masks"
    a = _square((8, 10), 1, 4, 1, 4)
    _png(img / "a.png", a)
    _tif(img / "b.tif", a)
    _tif(img / "c.ome.tif", np.stack([a, a, a], -1))
    _png(img / "d_mask.png", a)            # an image may end in _mask; its mask strips one ending
    _png(msk / "a.png", a)
    _png(msk / "b_mask.png", a)
    _tif(msk / "c_labels.tif", a.astype(np.uint16))
    _png(msk / "d_mask_mask.png", a)
    (msk / "notes.txt").write_text("ignored")
    _png(msk / ".hidden.png", a)
    pairs = pair_files(img, msk)
    assert [(n, i.name, m.name) for n, i, m in pairs] == [
        ("a", "a.png", "a.png"), ("b", "b.tif", "b_mask.png"), ("c", "c.ome.tif", "c_labels.tif"),
        ("d_mask", "d_mask.png", "d_mask_mask.png")]


def test_pair_files_lists_every_problem_at_once(tmp_path):
    img, msk = tmp_path / "images", tmp_path / "masks"
    a = _square((8, 10), 1, 4, 1, 4)
    for name in ("ok", "lonely", "twice", "small"):
        _png(img / f"{name}.png", a)
    _png(msk / "ok.png", a)
    _png(msk / "stray_mask.png", a)
    _png(msk / "twice.png", a)
    _png(msk / "twice_gt.png", a)
    _png(msk / "small.png", a[:6])
    with pytest.raises(EvaluationError) as info:
        pair_files(img, msk)
    text = str(info.value)
    assert "4 problem(s)" in text
    assert "lonely.png: no mask" in text
    assert "stray_mask.png: no image named stray" in text
    assert "twice: several files" in text and "twice_gt.png" in text
    assert "small: image is 8x10 but mask is 6x10" in text
    assert "\n" not in text
    assert isinstance(info.value, InputError)


def test_pair_files_missing_and_empty_folders(tmp_path):
    with pytest.raises(EvaluationError, match="images folder not found"):
        pair_files(tmp_path / "nope", tmp_path)
    (tmp_path / "i").mkdir()
    with pytest.raises(EvaluationError, match="no images found"):
        pair_files(tmp_path / "i", tmp_path)


def test_pair_files_reports_unreadable_header(tmp_path):
    img, msk = tmp_path / "images", tmp_path / "masks"
    _png(img / "a.png", np.zeros((4, 4), np.uint8))
    msk.mkdir()
    (msk / "a.png").write_bytes(b"not a png")
    with pytest.raises(EvaluationError, match="a: cannot read the file header"):
        pair_files(img, msk)


# ---------------------------------------------------------------- with a predictor

def _dataset(tmp_path):
    """Two 16x16 images. 'full': 4x4 gt, prediction covers 8 px of it (dice 2/3).
    'none': empty gt, nothing predicted (native: all scores 1; paper: skipped)."""
    img, msk = tmp_path / "images", tmp_path / "masks"
    image = _square((16, 16), 2, 6, 2, 4)                   # bright 4x2 block -> predicted 8 px
    _png(img / "full.png", np.stack([image] * 3, -1))
    _png(msk / "full_mask.png", _square((16, 16), 2, 6, 2, 6))  # 16 px, {0, 255}
    _png(img / "none.png", np.zeros((16, 16), np.uint8))
    _png(msk / "none_mask.png", np.zeros((16, 16), np.uint8))
    return img, msk


def test_evaluate_native(tmp_path, fake_predict):
    img, msk = _dataset(tmp_path)
    progress = []
    result = run_to_end(evaluate_pairs(stand_in(), img, msk), progress.append)
    assert [(p.done, p.total) for p in progress] == [(0, 2), (1, 2), (2, 2)]
    assert [r["name"] for r in result.rows] == ["full", "none"]
    full, none = result.rows
    assert full["dice"] == pytest.approx(2 * 8 / 24) and full["recall"] == 0.5 and full["precision"] == 1.0
    assert (none["dice"], none["iou"]) == (1.0, 1.0)
    assert result.means["n_images"] == 2
    assert result.means["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert result.skipped == [] and result.notes == []
    assert fake_predict[0].shape == (16, 16, 3)  # native size, colour kept


def test_evaluate_paper_protocol(tmp_path, fake_predict, monkeypatch):
    img, msk = tmp_path / "images", tmp_path / "masks"
    # 512 x 512 uint16 image, 128 x 128 bright block over a 128 x 256 gt -> at 256: 64x64 of 64x128
    image = _square((512, 512), 0, 128, 0, 128, value=60000, dtype=np.uint16)
    _tif(img / "big.tif", image)
    _png(msk / "big.png", _square((512, 512), 0, 128, 0, 256, value=1))
    _png(img / "empty.png", np.zeros((300, 200), np.uint8))
    _png(msk / "empty.png", np.zeros((300, 200), np.uint8))
    fake = fake_predict

    def predict_uint16(image, model, **kw):  # threshold relative to the uint16 range
        fake.append(image)
        return (image > 30000).astype(np.uint8)

    monkeypatch.setattr(ev, "_predict_labels", predict_uint16)
    result = evaluate(stand_in(), img, msk, protocol="paper")
    assert result.skipped == ["empty"]
    assert result.means["n_images"] == 1
    assert result.means["dice"] == pytest.approx(2 * 64 * 64 / (64 * 64 + 64 * 128))
    assert len(fake) == 1 and fake[0].shape == (256, 256) and fake[0].dtype == np.uint16
    assert result.settings["protocol"] == "paper"


def test_evaluate_paper_protocol_all_empty(tmp_path, fake_predict):
    img, msk = tmp_path / "images", tmp_path / "masks"
    _png(img / "e.png", np.zeros((20, 20), np.uint8))
    _png(msk / "e.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(EvaluationError, match="--protocol native"):
        evaluate(stand_in(), img, msk, protocol="paper")


def test_evaluate_unknown_protocol(tmp_path):
    with pytest.raises(EvaluationError, match="unknown protocol"):
        evaluate(stand_in(), tmp_path, tmp_path, protocol="kaggle")


def test_evaluate_instances_with_binary_and_label_masks(tmp_path, fake_predict):
    img, msk = tmp_path / "images", tmp_path / "masks"
    image = np.zeros((12, 12), np.uint8)
    image[0:4, 0:3] = 255       # matches gt object 1 (IoU 12/16)
    image[0:2, 10:12] = 255     # false positive
    gt = np.zeros((12, 12), np.uint16)
    gt[0:4, 0:4] = 1
    gt[6:10, 6:10] = 2          # missed
    _png(img / "lab.png", image)
    _tif(msk / "lab_labels.tif", gt)
    _png(img / "bin.png", image)
    _png(msk / "bin_mask.png", ((gt > 0) * 255).astype(np.uint8))
    messages = []
    result = run_to_end(evaluate_pairs(stand_in(), img, msk, instances=True), lambda p: messages.append(p.message))
    # both masks give the same objects: TP 1, n_pred 2, n_gt 2 -> F1 1/2; AJI 12 / (16 + 16 + 4) = 1/3
    for row in result.rows:
        assert (row["n_pred"], row["n_gt"]) == (2, 2)
        assert row["f1_50"] == pytest.approx(0.5)
        assert row["aji"] == pytest.approx(12 / 36)
    assert sum("4-connected" in m for m in messages) == 1
    assert len(result.notes) == 1
    assert {"f1_50", "aji", "precision_50", "recall_50"} <= set(result.means)


def test_evaluate_prediction_size_mismatch(tmp_path, fake_predict, monkeypatch):
    img, msk = _dataset(tmp_path)
    monkeypatch.setattr(ev, "_predict_labels", lambda image, model, **kw: np.zeros((3, 3), np.uint8))
    with pytest.raises(EvaluationError, match="prediction is"):
        evaluate(stand_in(), img, msk)


def test_evaluate_loads_model_by_name(tmp_path, fake_predict, monkeypatch):
    img, msk = _dataset(tmp_path)
    loaded = []
    monkeypatch.setattr(ev, "_load_model", lambda source, device: loaded.append((source, device)) or stand_in())
    evaluate("nuclei", img, msk, device="cpu")
    assert loaded == [("nuclei", "cpu")]


def test_evaluate_can_be_cancelled(tmp_path, fake_predict):
    img, msk = _dataset(tmp_path)
    from napari_litenext.inference.predict import Cancelled
    with pytest.raises(Cancelled):
        evaluate(stand_in(), img, msk, should_stop=lambda: True)


def test_json_output(tmp_path, fake_predict):
    img, msk = _dataset(tmp_path)
    result = evaluate(stand_in(), img, msk, instances=True)
    out = tmp_path / "out" / "scores.json"
    result.write_json(out)
    data = json.loads(out.read_text())
    for key in ("n_images", "dice", "iou", "precision", "recall", "f1_50", "aji", "per_image"):
        assert key in data
    assert data["n_images"] == 2 and len(data["per_image"]) == 2
    assert data["per_image"][0]["name"] == "full"
    with pytest.raises(FileExistsError):
        result.write_json(out)
    result.write_json(out, overwrite=True)
    assert [p.name for p in out.parent.iterdir()] == ["scores.json"]  # no temporary left behind
    text = result.table()
    assert text.splitlines()[0] == "2 images scored (native protocol)"
    assert "dice" in text and "aji" in text


# ---------------------------------------------------------------- arrays

def test_evaluate_arrays():
    gt = [_square((8, 8), 0, 4, 0, 4, value=1), np.zeros((8, 8), np.uint8)]
    pred = [_square((8, 8), 0, 4, 0, 2, value=1), np.ones((8, 8), np.uint8)]
    result = evaluate_arrays(pred, gt)
    assert result.rows[0]["dice"] == pytest.approx(2 / 3) and result.rows[1]["dice"] == 0.0
    assert result.means["dice"] == pytest.approx(1 / 3)
    skipping = evaluate_arrays(pred, gt, names=["a", "b"], skip_empty=True)
    assert skipping.skipped == ["b"] and skipping.means["n_images"] == 1
    inst = evaluate_arrays(pred, gt, instances=True)
    assert inst.rows[0]["f1_50"] == 0.0 and inst.rows[1]["aji"] == 0.0  # IoU 8/16 is not > 0.5
    assert inst.notes  # binary arrays were labelled
    with pytest.raises(ValueError, match="2 predictions but 1"):
        evaluate_arrays(pred, gt[:1])
    with pytest.raises(ValueError, match="prediction is"):
        evaluate_arrays([np.zeros((2, 2))], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="every ground truth is empty"):
        evaluate_arrays([np.zeros((2, 2))], [np.zeros((2, 2))], skip_empty=True)


def test_resize_image_keeps_dtype_and_range():
    rgb = np.zeros((100, 60, 3), np.uint8)
    rgb[:50] = 255
    out = ev._resize_image(rgb, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[:14].min() == 255 and out[18:].max() == 0
    f = ev._resize_image(np.full((40, 40), 0.25, np.float32), 16)
    assert f.dtype == np.float32 and np.allclose(f, 0.25)
    with pytest.raises(EvaluationError, match="2D images"):
        ev._resize_image(np.zeros((2, 4, 4, 3), np.uint8), 16)


# ---------------------------------------------------------------- the real predictor

@pytest.mark.parametrize("protocol", ["native", "paper"])
def test_evaluate_with_real_model_matches_predict(tmp_path, protocol):
    """Evaluation gives exactly the scores of ``predict``'s labels (random weights, tiny images)."""
    import torch

    from napari_litenext.config import InferenceConfig, ModelConfig
    from napari_litenext.metrics import resize_nearest
    from napari_litenext.network.model import LiteNeXt
    from napari_litenext.inference.predict import predict

    torch.manual_seed(0)
    model = LiteNeXt(ModelConfig(base_width=4, fusion_dim=8)).eval()  # small: same code, faster
    model.inference = InferenceConfig(mode="resize", input_size=64, threshold=0.6)
    rng = np.random.default_rng(1)
    img, msk = tmp_path / "images", tmp_path / "masks"
    images = {"a": rng.integers(0, 256, (40, 48), dtype=np.uint8),
              "b": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)}
    masks = {"a": _square((40, 48), 5, 30, 10, 40, value=1), "b": _square((24, 24), 0, 12, 0, 24)}
    for name in images:
        _png(img / f"{name}.png", images[name])
        _png(msk / f"{name}_mask.png", masks[name])
    result = evaluate(model, img, msk, instances=True, protocol=protocol)
    preds, gts = [], []
    for name in sorted(images):
        image, gt = images[name], masks[name]
        if protocol == "paper":
            image, gt = ev._resize_image(image, 256), resize_nearest(gt)
        preds.append(predict(image, model, instances=True).labels)
        gts.append(gt)
    expected = evaluate_arrays(preds, gts, instances=True, names=sorted(images))
    assert result.means == pytest.approx(expected.means)
    assert [r["name"] for r in result.rows] == ["a", "b"]
    assert result.settings["threshold"] == 0.6


def test_paper_protocol_scores_without_minimum_size(monkeypatch, tmp_path):
    # the paper scores the thresholded output: evaluate must ask predict for min_size 0 there,
    # and leave the model's own setting (None) for the native protocol
    from napari_litenext.io.images import write_png

    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    write_png(tmp_path / "i" / "a.png", np.zeros((32, 32), np.uint8))
    write_png(tmp_path / "m" / "a.png", np.full((32, 32), 255, np.uint8))
    seen = []

    def fake(image, model, **kw):
        seen.append(kw["min_size"])
        return np.ones(image.shape[:2], np.uint8)

    monkeypatch.setattr(ev, "_predict_labels", fake)
    for protocol in ("paper", "native"):
        evaluate(stand_in(), tmp_path / "i", tmp_path / "m", protocol=protocol)
    assert seen == [0, None]
