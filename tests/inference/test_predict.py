import json

import numpy as np
import pytest

from napari_litenext.errors import LiteNeXtError
import torch
from torch import nn

from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.network.model import LiteNeXt
from napari_litenext.inference.postprocess import postprocess
from napari_litenext.inference.predict import Cancelled, Prediction, Progress, infer_axes, predict, segment
from napari_litenext.inference.preprocess import InputError


class PixelModel(nn.Module):
    """Logits are a known function of each input pixel: 6 * (red - 0.5). Counts its calls."""

    def __init__(self, **inference):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(6.0))
        self.inference = InferenceConfig(**inference)
        self.card = ModelCard(name="pixel")
        self.sha256 = "abc"
        self.calls = []

    def forward(self, x):
        assert x.dim() == 4 and x.shape[1] == 3 and x.dtype == torch.float32
        self.calls.append(tuple(x.shape))
        return self.scale * (x[:, :1] - 0.5)


def expected(values01):
    return 1.0 / (1.0 + np.exp(-6.0 * (values01 - 0.5)))


def field(h, w, scale=1.0):
    yy, xx = np.mgrid[:h, :w].astype(np.float32) / scale
    return (0.5 + 0.45 * np.sin(yy / 9.0) * np.cos(xx / 13.0)).astype(np.float32)


def test_tile_mode_reproduces_position_function_through_tiles():
    img = field(150, 170)
    model = PixelModel(mode="tile", tile_size=48, tile_overlap=0.25)
    result = predict(img, model, batch_size=3)
    assert isinstance(result, Prediction) and result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities, expected(img), atol=2e-6)
    assert len(model.calls) > 3 and all(c[-2:] == (48, 48) for c in model.calls)
    np.testing.assert_array_equal(result.labels, postprocess(expected(img), 0.5))


def test_uint8_rgb_dtype_normalisation_and_alpha_ignored(rng):
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    model = PixelModel(mode="tile", tile_size=32)
    result = predict(rgb, model)
    np.testing.assert_allclose(result.probabilities, expected(rgb[..., 0] / 255.0), atol=2e-6)
    rgba = np.concatenate([rgb, np.zeros((40, 50, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(predict(rgba, model).probabilities, result.probabilities)


def test_percentile_normalisation_and_invert_for_uint16(rng):
    img = rng.integers(100, 1100, (32, 32), dtype=np.uint16)
    model = PixelModel(mode="tile", tile_size=32, normalisation="minmax", invert=True)
    got = predict(img, model).probabilities
    lo, hi = img.min(), img.max()
    np.testing.assert_allclose(got, expected(1.0 - (img - lo) / float(hi - lo)), atol=2e-6)


def test_resize_mode_close_to_native_for_smooth_image():
    img = field(300, 200, scale=5.0)
    model = PixelModel(mode="resize", input_size=64)
    result = predict(img, model)
    assert result.probabilities.shape == (300, 200)
    assert model.calls == [(1, 3, 64, 64)]
    error = np.abs(result.probabilities - expected(img))
    assert error[5:-5, 5:-5].max() < 0.01 and error.max() < 0.05  # edges: half a network pixel clamped
    assert result.settings["input_size"] == 64 and result.settings["mode"] == "resize"


def test_mode_and_tile_arguments_override_model_settings():
    model = PixelModel(mode="resize", input_size=64)
    predict(field(40, 40), model, mode="tile", tile_size=32, tile_overlap=0.0)
    assert all(c[-2:] == (32, 32) for c in model.calls)


@pytest.mark.parametrize("shape,channel,axes", [
    ((20, 30), None, "YX"), ((20, 30, 3), None, "YXC"), ((20, 30, 4), None, "YXC"),
    ((20, 30, 2), 1, "YXC"), ((2, 20, 30), 1, "CYX"), ((5, 20, 30), None, "ZYX"),
    ((3, 20, 30), None, "ZYX"), ((5, 20, 30, 3), None, "ZYXC"), ((5, 20, 30, 2), 0, "ZYXC"),
])
def test_axes_inference_table(shape, channel, axes):
    assert infer_axes(shape, channel) == axes


@pytest.mark.parametrize("shape,text", [((20, 30, 2), "channel="), ((5, 3, 20, 30), "axes="),
                                        ((2, 5, 3, 20, 30), "axes="), ((20,), "2 dimensions")])
def test_axes_inference_asks_for_help(shape, text):
    with pytest.raises(InputError, match=text) as info:
        infer_axes(shape)
    assert "\n" not in str(info.value)


def test_stack_slices_match_single_images(rng):
    stack = rng.random((3, 40, 36)).astype(np.float32)
    model = PixelModel(mode="tile", tile_size=32)
    result = predict(stack, model, batch_size=4)
    assert result.probabilities.shape == (3, 40, 36) and result.settings["axes"] == "ZYX"
    for z in range(3):
        np.testing.assert_allclose(result.probabilities[z], expected(stack[z]), atol=2e-6)
    resized = predict(stack, PixelModel(mode="resize", input_size=32))
    assert resized.probabilities.shape == (3, 40, 36)


def test_given_axes_move_channels_last_and_keep_stack_order(rng):
    zcyx = rng.random((2, 3, 20, 24)).astype(np.float32)
    model = PixelModel(mode="tile", tile_size=16)
    result = predict(zcyx, model, axes="ZCYX")
    assert result.probabilities.shape == (2, 20, 24)
    np.testing.assert_allclose(result.probabilities, expected(zcyx[:, 0]), atol=2e-6)
    cyx = predict(zcyx[0], model, axes="cyx")
    np.testing.assert_allclose(cyx.probabilities, expected(zcyx[0, 0]), atol=2e-6)
    tyx = predict(zcyx[:, 1], model, axes="TYX")
    assert tyx.settings["axes"] == "TYX"
    np.testing.assert_allclose(tyx.probabilities, expected(zcyx[:, 1]), atol=2e-6)


def test_channel_choice_in_multichannel_image(rng):
    img = rng.random((24, 24, 5)).astype(np.float32)
    got = predict(img, PixelModel(mode="tile", tile_size=16), channel=3, axes="YXC")
    np.testing.assert_allclose(got.probabilities, expected(img[..., 3]), atol=2e-6)
    got = predict(img[..., :3], PixelModel(mode="tile", tile_size=16), channel=2)
    np.testing.assert_allclose(got.probabilities, expected(img[..., 2]), atol=2e-6)


@pytest.mark.parametrize("image,kwargs,text", [
    (np.zeros((10, 40), np.float32), {}, "at least 16 x 16"),
    (np.zeros((40, 15, 3), np.uint8), {}, "at least 16 x 16"),
    (np.full((20, 20), np.nan, np.float32), {}, "NaN or infinite"),
    (np.full((20, 20), np.inf, np.float64), {}, "NaN or infinite"),
    (np.zeros((20, 20), np.complex64), {}, "dtype"),
    (np.zeros(20, np.float32), {}, "2 dimensions"),
    (np.zeros((20, 20), np.float32), {"axes": "ZYX"}, "3 letters"),
    (np.zeros((20, 20), np.float32), {"axes": "YQ"}, "unknown letter"),
    (np.zeros((20, 20), np.float32), {"axes": "YY"}, "repeats"),
    (np.zeros((2, 20, 20), np.float32), {"axes": "CZX"}, "must contain Y and X"),
    (np.zeros((20, 20, 3), np.float32), {"channel": 5}, "out of range"),
    (np.zeros((20, 20), np.float32), {"channel": 1}, "single-channel"),
    (np.zeros((20, 20, 6), np.float32), {"axes": "YXC"}, "channel="),
    (np.zeros((20, 20), np.float32), {"threshold": 1.0}, "threshold"),
    (np.zeros((20, 20), np.float32), {"tile_size": 40}, "multiple of 16"),
    (np.zeros((20, 20), np.float32), {"tile_overlap": 0.5}, "tile_overlap"),
    (np.zeros((20, 20), np.float32), {"mode": "crop"}, "mode"),
    (np.zeros((20, 20), np.float32), {"min_size": -1}, "min_size"),
    (np.zeros((20, 20), np.float32), {"device": "tpu"}, "device"),
])
def test_bad_input_messages(image, kwargs, text):
    with pytest.raises(LiteNeXtError, match=text) as info:
        predict(image, PixelModel(mode="tile", tile_size=16), **kwargs)
    assert "\n" not in str(info.value)


def test_progress_events_and_result(rng):
    gen = segment(rng.random((2, 40, 40)).astype(np.float32), PixelModel(mode="tile", tile_size=32),
                  batch_size=3)
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(gen))
    assert all(isinstance(e, Progress) for e in events)
    tiles = [e for e in events if e.stage == "tiles"]
    assert [e.done for e in tiles] == [3, 6, 8] and {e.total for e in tiles} == {8}
    post = [e for e in events if e.stage == "postprocess"]
    assert [(e.done, e.total) for e in post] == [(1, 2), (2, 2)]
    assert isinstance(stop.value.value, Prediction)


def test_should_stop_cancels_at_next_batch():
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    model = PixelModel(mode="tile", tile_size=16)
    with pytest.raises(Cancelled):
        predict(field(64, 64), model, batch_size=2, should_stop=stop)
    assert len(model.calls) == 1
    assert issubclass(Cancelled, Exception)


def test_instances_settings_and_input_untouched():
    img = np.zeros((48, 64), np.float32)
    yy, xx = np.ogrid[:48, :64]
    img[((yy - 24) ** 2 + (xx - 20) ** 2 <= 100) | ((yy - 24) ** 2 + (xx - 37) ** 2 <= 100)] = 1.0
    before = img.copy()
    result = predict(img, PixelModel(mode="tile", tile_size=32), instances=True, min_size=5)
    assert result.labels.dtype == np.int32 and result.labels.max() == 2
    np.testing.assert_array_equal(img, before)
    settings = json.loads(json.dumps(result.settings))
    assert settings["model"] == "pixel" and settings["sha256"] == "abc" and settings["instances"] is True
    assert settings["min_size"] == 5 and settings["value_range"] == [0.0, 1.0]


def test_real_litenext_tiles_and_resize():
    torch.manual_seed(0)
    model = LiteNeXt().eval()
    model.inference = InferenceConfig(mode="tile", tile_size=32, tile_overlap=0.25)
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    tiled = predict(img, model, device="cpu")
    assert tiled.probabilities.shape == (40, 56) and tiled.labels.dtype == np.uint8
    assert 0.0 <= tiled.probabilities.min() and tiled.probabilities.max() <= 1.0
    # a single tile covering the image gives exactly the network's own output
    whole = predict(img[:32, :32], model, tile_size=32)
    with torch.inference_mode():
        x = torch.from_numpy(img[:32, :32].transpose(2, 0, 1)[None] / np.float32(255))
        direct = torch.sigmoid(model(x))[0, 0].numpy()
    np.testing.assert_allclose(whole.probabilities, direct, atol=1e-6)
    resized = predict(img, model, mode="resize")
    assert resized.probabilities.shape == (40, 56)


def test_real_dsb_image_through_reader_and_tiles(shared_dir):
    from napari_litenext.io.images import read_image

    root = shared_dir / "data" / "dsb2018"
    image_id = json.loads((root / "split.json").read_text())["test"][0]
    image = read_image(root / "images" / f"{image_id}.png")
    model = PixelModel(mode="tile", tile_size=128, normalisation="percentile")
    result = predict(image, model, instances=True)
    assert result.probabilities.shape == image.shape[:2]
    assert result.settings["input_axes"] == "YXC" and result.labels.dtype == np.int32


def test_training_mode_is_restored():
    model = PixelModel(mode="tile", tile_size=16)
    model.train()
    predict(field(20, 20), model)
    assert model.training
    model.eval()
    predict(field(20, 20), model)
    assert not model.training


@pytest.mark.parametrize("instances", [False, True])
def test_workdir_puts_the_outputs_in_memory_mapped_files(tmp_path, instances):
    stack = np.stack([field(48, 64, scale) for scale in (1.0, 0.5, 2.0)])
    model = PixelModel(mode="tile", tile_size=32, tile_overlap=0.25)
    in_memory = predict(stack, model, instances=instances)
    on_disk = predict(stack, model, instances=instances, workdir=tmp_path)
    for name in ("probabilities", "labels"):
        array = getattr(on_disk, name)
        assert isinstance(array, np.memmap) and array.filename == str(tmp_path / f"{name}.npy")
        np.testing.assert_array_equal(array, getattr(in_memory, name))
        assert array.dtype == getattr(in_memory, name).dtype
    assert in_memory.labels.max() > 1 if instances else in_memory.labels.max() == 1


def test_workdir_must_exist(tmp_path):
    with pytest.raises(InputError, match="not an existing folder"):
        predict(field(32, 32), PixelModel(), workdir=tmp_path / "missing")


def test_workdir_without_disk_space_is_one_clear_error(tmp_path, disk_full):
    with pytest.raises(OSError, match="not enough free disk space for the probabilities"):
        predict(field(32, 32), PixelModel(), workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []
