"""Evaluation with the adaptive and object size settings: overrides reach ``predict``, are recorded,
and are refused where they cannot apply (paper protocol, resize mode, a model without trained size)."""

from __future__ import annotations

import dataclasses
import importlib
import types

import numpy as np
import pytest
from PIL import Image

from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.errors import SettingsError
from napari_litenext.inference.evaluate import evaluate

# the package exposes the function evaluate() under the module's name, so fetch the module itself
ev = importlib.import_module("napari_litenext.inference.evaluate")
predict_module = importlib.import_module("napari_litenext.inference.predict")


def stand_in(**inference):
    """A model as evaluation sees it: tile mode, trained at 20 px objects unless told otherwise."""
    config = dataclasses.replace(InferenceConfig(mode="tile", trained_object_size=20.0), **inference)
    return types.SimpleNamespace(inference=config, card=ModelCard(name="stand-in"), sha256="abc")


def _write_pair(tmp_path, image, mask):
    """images/a.png and masks/a_mask.png; returns the two folders."""
    for path, array in ((tmp_path / "images" / "a.png", image), (tmp_path / "masks" / "a_mask.png", mask)):
        path.parent.mkdir()
        Image.fromarray(array).save(path)
    return tmp_path / "images", tmp_path / "masks"


@pytest.fixture
def pair(tmp_path):
    square = np.zeros((32, 32), np.uint8)
    square[4:12, 4:12] = 255
    return _write_pair(tmp_path, square, square)


@pytest.fixture
def predict_spy(monkeypatch):
    """Replaces ``inference.predict.predict`` (what ``_predict_labels`` calls); records its keywords."""
    calls = []

    def predict(image, model, **kw):
        calls.append(kw)
        return types.SimpleNamespace(labels=(image > 127).astype(np.uint8))

    monkeypatch.setattr(predict_module, "predict", predict)
    return calls


def test_overrides_reach_predict_and_are_recorded(pair, predict_spy):
    result = evaluate(stand_in(), *pair, adaptive=True, object_size="24")
    assert predict_spy[0]["adaptive"] is True and predict_spy[0]["object_size"] == "24"
    assert (result.settings["adaptive"], result.settings["object_size"]) == (True, 24.0)
    assert result.to_dict()["object_size"] == 24.0
    assert result.means["dice"] == 1.0


def test_none_keeps_the_models_values(pair, predict_spy):
    result = evaluate(stand_in(adaptive=True, object_size="auto"), *pair)
    assert predict_spy[0]["adaptive"] is None and predict_spy[0]["object_size"] is None
    assert (result.settings["adaptive"], result.settings["object_size"]) == (True, "auto")
    default = evaluate(stand_in(), *pair, adaptive=False, object_size=0)
    assert (default.settings["adaptive"], default.settings["object_size"]) == (False, 0.0)
    assert predict_spy[1]["adaptive"] is False and predict_spy[1]["object_size"] == 0


def test_paper_protocol_applies_neither(pair, predict_spy):
    result = evaluate(stand_in(adaptive=True, object_size=30.0), *pair, protocol="paper")
    assert predict_spy[0]["adaptive"] is False and predict_spy[0]["object_size"] == 0
    assert result.settings["adaptive"] is False
    assert result.settings["object_size"].startswith("not applied with the paper protocol")
    auto = evaluate(stand_in(), *pair, protocol="paper", adaptive=True, object_size="auto")
    assert predict_spy[1]["adaptive"] is False and predict_spy[1]["object_size"] == 0
    assert auto.settings["object_size"].startswith("not applied")


def test_paper_protocol_refuses_a_number_before_reading(tmp_path, predict_spy):
    missing = tmp_path / "nowhere"  # pairing would fail on these: the setting is refused first
    with pytest.raises(SettingsError, match=r"^object_size 30 cannot be applied with the paper protocol"):
        evaluate(stand_in(), missing, missing, protocol="paper", object_size=30)
    assert predict_spy == []


def test_resize_mode_does_not_apply_object_size(pair, predict_spy):
    result = evaluate(stand_in(mode="resize"), *pair, object_size="auto")
    assert predict_spy[0]["object_size"] == 0
    assert result.settings["object_size"] == "not applied in resize mode"
    with pytest.raises(SettingsError, match="object_size 24 cannot be applied in resize mode"):
        evaluate(stand_in(mode="resize"), *pair, object_size=24)
    assert len(predict_spy) == 1


def test_model_without_trained_object_size_is_refused_before_predicting(pair, predict_spy):
    with pytest.raises(SettingsError, match="'stand-in' does not record the object size"):
        evaluate(stand_in(trained_object_size=0.0), *pair, object_size="auto")
    assert predict_spy == []


@pytest.mark.parametrize("value", ["x", -3, "-1"])
def test_bad_object_size_is_refused_before_reading(tmp_path, predict_spy, value):
    with pytest.raises(SettingsError, match="object_size must be"):
        evaluate(stand_in(), tmp_path / "nowhere", tmp_path / "nowhere", object_size=value)
    with pytest.raises(SettingsError, match="adaptive must be True or False"):
        evaluate(stand_in(), tmp_path / "nowhere", tmp_path / "nowhere", adaptive="yes")


def test_real_model_scores_what_predict_gives_at_that_object_size(tmp_path):
    """With the real predictor (random weights, tiny images) the overrides give predict's labels."""
    import torch

    from napari_litenext.config import ModelConfig
    from napari_litenext.inference.evaluate import evaluate_arrays
    from napari_litenext.inference.predict import predict
    from napari_litenext.network.model import LiteNeXt

    torch.manual_seed(0)
    model = LiteNeXt(ModelConfig(base_width=4, fusion_dim=8)).eval()
    model.inference = InferenceConfig(mode="tile", tile_size=32, threshold=0.5, trained_object_size=10.0)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    gt = np.zeros((40, 48), np.uint8)
    gt[5:30, 10:40] = 1
    result = evaluate(model, *_write_pair(tmp_path, image, gt), instances=True, adaptive=True, object_size=20)
    labels = predict(image, model, instances=True, adaptive=True, object_size=20)
    assert labels.settings["scale"] == 0.5  # rescaled: the override was applied
    assert result.means == pytest.approx(evaluate_arrays([labels.labels], [gt], instances=True).means)
    assert (result.settings["adaptive"], result.settings["object_size"]) == (True, 20.0)
