"""ONNX export and the ONNX Runtime backend: same probabilities as torch, settings carried in the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _exchange_support import tiny_model
from napari_litenext.errors import CheckpointError, InputError
from napari_litenext.exchange import OnnxModel, export_onnx, load_onnx
from napari_litenext.network.checkpoint import save_checkpoint, state_dict_sha256

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model(normalisation="dtype", mode="resize", input_size=32, threshold=0.4, invert=True)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


def probabilities(model, x):
    with torch.no_grad():
        return torch.sigmoid(model(x))[:, 0].numpy()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 48, 80), (2, 3, 16, 16), (1, 3, 50, 37)])
def test_probabilities_match_torch_for_any_batch_and_size(exported, shape):
    model, path = exported
    onnx_model = load_onnx(path)
    x = torch.rand(*shape)
    out = onnx_model.probabilities(x.numpy())
    assert out.shape == (shape[0],) + shape[2:] and out.dtype == np.float32
    assert np.abs(out - probabilities(model, x)).max() <= TOLERANCE
    with torch.no_grad():
        assert np.abs(onnx_model.logits(x.numpy()) - model(x).numpy()).max() <= TOLERANCE


def test_settings_travel_in_the_metadata(exported):
    model, path = exported
    onnx_model = load_onnx(path, threads=1)
    assert isinstance(onnx_model, OnnxModel)
    assert onnx_model.inference == model.inference and onnx_model.card == model.card
    assert onnx_model.config == model.config
    assert onnx_model.sha256 == state_dict_sha256(model.state_dict(), model.config, model.inference)
    assert "tiny" in repr(onnx_model)


def test_checkpoint_digest_is_kept(tmp_path):
    model = tiny_model()
    digest = save_checkpoint(tmp_path / "tiny.pt", model, model.inference, model.card)
    path = export_onnx(tmp_path / "tiny.pt", tmp_path / "tiny.onnx")
    assert load_onnx(path).sha256 == digest


def test_wrong_inputs_are_input_errors(exported):
    onnx_model = load_onnx(exported[1])
    with pytest.raises(InputError, match="replicate grayscale"):
        onnx_model.probabilities(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(InputError, match="at least 16 x 16"):
        onnx_model.probabilities(np.zeros((1, 3, 8, 32), np.float32))


def test_unusable_files_are_checkpoint_errors(exported, tmp_path):
    import onnx

    with pytest.raises(CheckpointError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="junk.onnx is not a readable ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
    proto = onnx.load(str(exported[1]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="bare.onnx carries no napari-litenext settings"):
        load_onnx(tmp_path / "bare.onnx")
    newer = {"format": "napari-litenext", "format_version": 99}
    proto.metadata_props.add(key="napari_litenext", value=json.dumps(newer))
    onnx.save(proto, str(tmp_path / "newer.onnx"))
    with pytest.raises(CheckpointError, match="newer napari-litenext"):
        load_onnx(tmp_path / "newer.onnx")


def test_existing_file_is_kept_without_overwrite(exported):
    model, path = exported
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        export_onnx(model, path)
    assert path.read_bytes() == before
    export_onnx(model, path, overwrite=True)


def test_export_leaves_the_model_untouched(exported, tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    assert model.sha256 == "" and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
