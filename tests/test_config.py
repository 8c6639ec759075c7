"""Configuration dataclasses: defaults, validation, and round trips through dicts and JSON."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig


def test_model_config_defaults_are_the_papers():
    config = ModelConfig()
    assert (config.in_channels, config.base_width, config.kernel_size, config.depths, config.fusion_dim) == \
        (3, 16, 7, (1, 1, 1, 1), 128)
    assert config.widths == (16, 32, 64, 128)
    assert ModelConfig(base_width=8).widths == (8, 16, 32, 64)


@pytest.mark.parametrize("kwargs, match", [
    ({"in_channels": 0}, "positive"),
    ({"base_width": 0}, "positive"),
    ({"fusion_dim": -1}, "positive"),
    ({"kernel_size": 4}, "odd"),
    ({"kernel_size": 0}, "odd"),
    ({"depths": (1, 1, 1)}, "four integers"),
    ({"depths": (1, 0, 1, 1)}, "four integers"),
])
def test_model_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"normalisation": "zscore"}, "normalisation must be one of"),
    ({"mode": "sliding"}, "mode must be one of"),
    ({"percentiles": (99.0, 1.0)}, "percentiles"),
    ({"percentiles": (-1.0, 99.0)}, "percentiles"),
    ({"percentiles": (1.0, 100.5)}, "percentiles"),
    ({"input_size": 100}, "input_size must be a multiple of 16"),
    ({"input_size": 0}, "input_size"),
    ({"tile_size": 8}, "tile_size must be a multiple of 16"),
    ({"tile_overlap": 0.5}, "tile_overlap"),
    ({"tile_overlap": -0.1}, "tile_overlap"),
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
    ({"min_size": -1}, "min_size"),
    ({"adaptive": "yes"}, "adaptive must be True or False"),
    ({"object_size": "big"}, "object_size must be 'auto', 'off' \\(0\\) or the typical object diameter"),
    ({"object_size": -3}, "object_size must be"),
    ({"object_size": True}, "object_size must be"),
    ({"object_size": "nan"}, "object_size must be"),
    ({"trained_object_size": -1.0}, "trained_object_size must be a number of pixels >= 0"),
    ({"trained_object_size": "auto"}, "trained_object_size"),
])
def test_inference_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InferenceConfig(**kwargs)


@pytest.mark.parametrize("given, stored", [
    (0, 0.0), (12, 12.0), (7.5, 7.5), ("auto", "auto"), (" Auto ", "auto"), ("30", 30.0), ("0", 0.0),
])
def test_object_size_is_a_number_of_pixels_or_auto(given, stored):
    assert InferenceConfig(object_size=given).object_size == stored
    assert InferenceConfig().with_overrides(object_size=given).object_size == stored
    assert type(InferenceConfig(object_size=given).object_size) is type(stored)


def test_inference_config_accepts_edge_values():
    config = InferenceConfig(percentiles=(0.0, 100.0), input_size=16, tile_size=16, tile_overlap=0.0,
                             threshold=0.01, min_size=0)
    assert config.tile_size == 16


@pytest.mark.parametrize("obj", [
    ModelConfig(),
    ModelConfig(in_channels=1, base_width=8, kernel_size=5, depths=(2, 1, 3, 1), fusion_dim=32),
    InferenceConfig(),
    InferenceConfig(normalisation="percentile", percentiles=(0.5, 99.5), mode="tile", tile_size=256,
                    tile_overlap=0.25, threshold=0.3, min_size=20, invert=True),
    InferenceConfig(adaptive=True, object_size="auto", trained_object_size=17.5),
    InferenceConfig(object_size=24.0, trained_object_size=12.0),
    ModelCard(),
    ModelCard(name="nuclei", description="DSB 2018 nuclei", data="DSB 2018 (CC0)", recipe="MWL + SRP",
              metrics={"dice": 0.91, "iou": 0.84}, limits="not for H&E", trained_by="napari-litenext 0.1.0"),
])
def test_round_trip_through_json(obj):
    data = obj.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-compatible, no tuples left
    assert not any(isinstance(v, tuple) for v in data.values())
    again = type(obj).from_dict(json.loads(json.dumps(data)))
    assert again == obj
    assert type(again.to_dict()) is dict


def test_from_dict_restores_tuples():
    config = ModelConfig.from_dict({"depths": [2, 1, 1, 1]})
    assert config.depths == (2, 1, 1, 1)
    assert hash(config) == hash(ModelConfig(depths=(2, 1, 1, 1)))
    assert InferenceConfig.from_dict({"percentiles": [2, 98]}).percentiles == (2, 98)


def test_from_dict_fills_defaults_for_missing_fields():
    assert ModelConfig.from_dict({}) == ModelConfig()
    assert InferenceConfig.from_dict({"threshold": 0.4}) == InferenceConfig(threshold=0.4)
    # checkpoints written before adaptive post-processing and object sizes existed
    old = InferenceConfig.from_dict({"mode": "tile", "instances": True, "stitch_threshold": 0.0})
    assert (old.adaptive, old.object_size, old.trained_object_size) == (False, 0.0, 0.0)


@pytest.mark.parametrize("cls", [ModelConfig, InferenceConfig, ModelCard])
def test_from_dict_rejects_unknown_fields(cls):
    with pytest.raises(ValueError, match="upgrade"):
        cls.from_dict({"from_the_future": 1})


def test_from_dict_validates():
    with pytest.raises(ValueError, match="odd"):
        ModelConfig.from_dict({"kernel_size": 6})
    with pytest.raises(ValueError, match="threshold"):
        InferenceConfig.from_dict({"threshold": 2})


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().base_width = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        InferenceConfig().threshold = 0.1  # type: ignore[misc]


def test_cards_do_not_share_metrics():
    a, b = ModelCard(), ModelCard()
    a.metrics["dice"] = 1.0
    assert b.metrics == {}


def test_config_module_does_not_import_torch():
    # config is read by the CLI's argument parsing and napari's discovery, which must stay fast.
    import subprocess
    code = "import sys, napari_litenext.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_object_size_reads_off_auto_and_pixels_from_text():
    assert InferenceConfig().with_overrides(object_size="off").object_size == 0.0
    assert InferenceConfig().with_overrides(object_size=" Auto ").object_size == "auto"
    assert InferenceConfig().with_overrides(object_size="30").object_size == 30.0
