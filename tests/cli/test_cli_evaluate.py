"""``napari-litenext evaluate`` with a stand-in model and predictor."""

from __future__ import annotations

import importlib
import json
import types

import numpy as np
import pytest
from PIL import Image

from napari_litenext.cli import main
from napari_litenext.config import InferenceConfig, ModelCard

ev = importlib.import_module("napari_litenext.inference.evaluate")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """images/ and masks/ with one 16x16 pair, and a predictor thresholding the image at 128."""
    img, msk = tmp_path / "images", tmp_path / "masks"
    img.mkdir()
    msk.mkdir()
    image = np.zeros((16, 16), np.uint8)
    image[2:6, 2:4] = 255                    # 8 px predicted
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6] = 255                     # 16 px true -> dice 2/3
    Image.fromarray(image).save(img / "cell.png")
    Image.fromarray(mask).save(msk / "cell_mask.png")
    calls = []

    def predict_labels(image, model, **kw):
        calls.append(kw)
        return (image > 127).astype(np.uint8)

    monkeypatch.setattr(ev, "_predict_labels", predict_labels)
    monkeypatch.setattr(ev, "_load_model", lambda source, device: types.SimpleNamespace(
        inference=InferenceConfig(), card=ModelCard(name="stand-in"), sha256="abc"))
    return img, msk, calls


def test_cli_evaluate_prints_table_and_writes_json(folders, tmp_path, capsys):
    img, msk, calls = folders
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--model", "nuclei", "--images", str(img), "--masks", str(msk),
                 "--instances", "--threshold", "0.4", "--device", "cpu", "--json", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == "1 image scored (native protocol)"
    assert any(line.split() == ["dice", "0.6667"] for line in stdout.splitlines()) and "aji" in stdout
    assert f"scores written to {out}" in stdout
    assert calls == [dict(instances=True, threshold=0.4, device="cpu", channel=None, should_stop=None, min_size=None,
                          adaptive=None, object_size=None)]
    data = json.loads(out.read_text())
    assert data["n_images"] == 1 and data["dice"] == pytest.approx(2 / 3)
    assert data["model_sha256"] == "abc" and data["per_image"][0]["name"] == "cell"


def test_cli_evaluate_refuses_to_overwrite_before_working(folders, tmp_path, capsys):
    img, msk, calls = folders
    out = tmp_path / "scores.json"
    out.write_text("precious")
    code = main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk), "--json", str(out)])
    assert code == 2 and calls == []
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "precious"
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk), "--json", str(out),
                 "--overwrite"]) == 0
    assert json.loads(out.read_text())["n_images"] == 1


def test_cli_evaluate_pairing_error_is_one_line(folders, capsys):
    img, msk, calls = folders
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(img / "orphan.png")
    code = main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk)])
    assert code == 2 and calls == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-litenext: error: 1 problem(s)") and "orphan.png: no mask" in err
    assert len(err.splitlines()) == 1


def test_cli_evaluate_paper_protocol(folders, capsys):
    img, msk, calls = folders
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk),
                 "--protocol", "paper"]) == 0
    assert "(paper protocol)" in capsys.readouterr().out


def test_cli_evaluate_bad_threshold(folders, capsys):
    img, msk, _ = folders
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk),
                 "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_cli_evaluate_adaptive_and_object_size(folders, tmp_path, monkeypatch):
    img, msk, calls = folders
    monkeypatch.setattr(ev, "_load_model", lambda source, device: types.SimpleNamespace(
        inference=InferenceConfig(mode="tile", trained_object_size=20.0), card=ModelCard(name="stand-in"),
        sha256="abc"))
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk), "--adaptive",
                 "--object-size", "auto", "--json", str(out)]) == 0
    assert (calls[-1]["adaptive"], calls[-1]["object_size"]) == (True, "auto")
    data = json.loads(out.read_text())
    assert (data["adaptive"], data["object_size"]) == (True, "auto")
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk), "--no-adaptive",
                 "--object-size", "24"]) == 0
    assert (calls[-1]["adaptive"], calls[-1]["object_size"]) == (False, "24")
    assert main(["evaluate", "--model", "m", "--images", str(img), "--masks", str(msk)]) == 0
    assert (calls[-1]["adaptive"], calls[-1]["object_size"]) == (None, None)  # the model's


@pytest.mark.parametrize("argv, expected", [
    (["--object-size", "x"], "--object-size must be 'auto', 'off' (0) or"),
    (["--object-size", "-2"], "--object-size must be"),
    (["--object-size", "30", "--protocol", "paper"], "--object-size 30 cannot be applied with the paper protocol"),
])
def test_cli_evaluate_bad_object_size_is_one_line(folders, tmp_path, capsys, argv, expected):
    _, _, calls = folders
    missing = tmp_path / "nowhere"  # refused before any file is read: these folders are never looked at
    assert main(["evaluate", "--model", "m", "--images", str(missing), "--masks", str(missing), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"napari-litenext: error: {expected}") and len(err.splitlines()) == 1
    assert calls == []


def test_cli_evaluate_help_explains_naming(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "_mask" in text and "--protocol" in text and "--instances" in text


def test_cli_evaluate_with_a_checkpoint_file(tmp_path, capsys):
    """The whole path: checkpoint file -> load_model -> predict -> scores (small random network)."""
    import torch

    from napari_litenext.network.checkpoint import save_checkpoint
    from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig
    from napari_litenext.network.model import LiteNeXt

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    sha = save_checkpoint(ckpt, LiteNeXt(ModelConfig(base_width=4, fusion_dim=8)),
                          InferenceConfig(mode="resize", input_size=32), ModelCard(name="tiny"))
    img, msk = tmp_path / "images", tmp_path / "masks"
    img.mkdir()
    msk.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(img / "x.png")
    Image.fromarray(((rng.random((20, 30)) > 0.5) * 255).astype(np.uint8)).save(msk / "x_mask.png")
    out = tmp_path / "s.json"
    assert main(["evaluate", "--model", str(ckpt), "--images", str(img), "--masks", str(msk),
                 "--device", "cpu", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n_images"] == 1 and 0.0 <= data["dice"] <= 1.0
    assert data["model"] == "tiny" and data["model_sha256"] == sha
    assert data["threshold"] == 0.5
