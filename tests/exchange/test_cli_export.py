"""``napari-litenext export``: formats by name or flag, refusals as one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml

from _exchange_support import tiny_model
from napari_litenext.cli import main
from napari_litenext.exchange import load_onnx
from napari_litenext.network.checkpoint import save_checkpoint

# TorchScript is what the tests load (and bioimageio.core loads in its test); its deprecation is moot.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "tiny.pt", model, model.inference, model.card)
    return tmp_path / "tiny.pt"


def test_export_onnx_by_file_name(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), str(tmp_path / "tiny.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_onnx(tmp_path / "tiny.onnx").card.name == "tiny"


@pytest.mark.slow
def test_export_bioimageio_with_metadata_and_test(checkpoint, tmp_path, capsys, offline):
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "cells.png")
    out = tmp_path / "tiny.pkg"
    code = main(["export", str(checkpoint), str(out), "--format", "bioimageio", "--author", "A. Person",
                 "--author", "B. Person", "--license", "CC-BY-4.0", "--cite", "My data (2024)=10.5281/zenodo.1",
                 "--tag", "cells", "--test-image", str(tmp_path / "cells.png"), "--test"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "bioimageio test: passed" in printed
    description = yaml.safe_load(zipfile.ZipFile(out).read("rdf.yaml"))
    assert [a["name"] for a in description["authors"]] == ["A. Person", "B. Person"]
    assert {"text": "My data (2024)", "doi": "10.5281/zenodo.1"} in description["cite"]


def test_refusals_are_one_line_errors(checkpoint, tmp_path, capsys):
    (tmp_path / "taken.onnx").write_bytes(b"keep me")
    cases = [
        (["export", str(checkpoint), str(tmp_path / "taken.onnx")], "exists; pass --overwrite"),
        (["export", str(checkpoint), str(tmp_path / "model.bin")], "cannot tell the format"),
        (["export", str(checkpoint), str(tmp_path / "m.zip"), "--cite", "no-doi"], "TEXT=DOI"),
        (["export", str(checkpoint), str(tmp_path / "m.zip"), "--cite", "x=no-doi"], "neither a DOI"),
        (["export", str(checkpoint), str(tmp_path / "m.zip"), "--license", "mine"], "not an SPDX identifier"),
        (["export", str(checkpoint), str(tmp_path / "m.onnx"), "--author", "X"], "bioimageio only"),
        (["export", str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")], "not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "taken.onnx").read_bytes() == b"keep me"
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.zip").exists()


def test_overwrite_replaces(checkpoint, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"old")
    assert main(["export", str(checkpoint), str(out), "--overwrite", "-q"]) == 0
    assert out.read_bytes()[:2] == b"PK"  # a TorchScript archive


def test_importing_the_exchange_package_loads_no_heavy_module():
    code = ("import json, sys, napari_litenext.exchange, napari_litenext.cli.export; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'onnx', 'onnxruntime', 'bioimageio'})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
