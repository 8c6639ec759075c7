"""segment / predict on ONNX Runtime: the same labels as torch, from the API and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def nuclei():
    import napari_litenext as nl

    if "nuclei" not in nl.bundled_models():
        pytest.skip("the bundled nuclei model is not installed")
    return nl.load_model("nuclei", device="cpu")


def test_api_onnx_backend_gives_the_torch_labels(nuclei, tmp_path):
    import napari_litenext as nl
    from napari_litenext.exchange import export_onnx, load_onnx
    from napari_litenext.plugin.sample_data import SAMPLE_DIR

    image = tifffile.imread(SAMPLE_DIR / "images" / "fluorescence.tif")
    onnx_model = load_onnx(export_onnx("nuclei", tmp_path / "nuclei.onnx"))
    torch_result = nl.predict(image, nuclei)
    onnx_result = nl.predict(image, onnx_model)
    assert onnx_result.settings["device"] == "onnxruntime"
    assert np.abs(onnx_result.probabilities - torch_result.probabilities).max() < 1e-4
    np.testing.assert_array_equal(onnx_result.labels, torch_result.labels)
    assert onnx_result.labels.max() > 20  # the model's own settings: instances


def test_cli_backend_onnxruntime_writes_the_same_labels(nuclei, tmp_path):
    from napari_litenext.cli import main
    from napari_litenext.plugin.sample_data import SAMPLE_DIR

    path = SAMPLE_DIR / "images" / "stained.tif"
    assert main(["predict", str(path), "-o", str(tmp_path / "torch"), "--device", "cpu", "-q"]) == 0
    assert main(["predict", str(path), "-o", str(tmp_path / "onnx"), "--backend", "onnxruntime", "-q"]) == 0
    torch_labels = tifffile.imread(tmp_path / "torch" / "stained_labels.tif")
    onnx_labels = tifffile.imread(tmp_path / "onnx" / "stained_labels.tif")
    np.testing.assert_array_equal(onnx_labels, torch_labels)
