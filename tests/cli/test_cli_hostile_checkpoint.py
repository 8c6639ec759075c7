"""``predict --model`` and ``train --init`` refuse an unusable checkpoint in one line, exit status 2."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_litenext.cli import main
from napari_litenext.config import InferenceConfig, ModelConfig
from napari_litenext.network.checkpoint import FORMAT, save_checkpoint, state_dict_sha256
from napari_litenext.network.model import LiteNeXt

TINY = ModelConfig(in_channels=1, base_width=2, kernel_size=3, fusion_dim=4)


def nan_weights(path: Path) -> Path:
    torch.manual_seed(0)
    model = LiteNeXt(TINY)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    save_checkpoint(path, model, InferenceConfig())
    return path


def huge_width(path: Path) -> Path:
    """The issue's file: a tiny model whose stored settings (with a valid SHA-256) say 4,000,000 wide."""
    state = LiteNeXt(TINY).state_dict()
    config, inference = {**TINY.to_dict(), "base_width": 4_000_000}, InferenceConfig().to_dict()
    digest = state_dict_sha256(state, types.SimpleNamespace(to_dict=lambda: config),
                               types.SimpleNamespace(to_dict=lambda: inference))
    torch.save({"format": FORMAT, "format_version": 1, "config": config, "inference": inference, "card": {},
                "state_dict": state, "sha256": digest}, path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "im", tmp_path / "ma"
    images.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        tifffile.imwrite(images / f"a{i}.tif", rng.integers(0, 256, (48, 48), dtype=np.uint8))
        mask = np.zeros((48, 48), np.uint8)
        mask[10:30, 12:34] = 1
        tifffile.imwrite(masks / f"a{i}.tif", mask)
    return images, masks


@pytest.mark.parametrize("make", [nan_weights, huge_width], ids=["nan", "huge-width"])
@pytest.mark.parametrize("command", ["predict", "train"])
def test_unusable_checkpoint_is_one_line_and_exit_2(tmp_path, folders, capsys, make, command):
    bad = make(tmp_path / "bad.pt")
    images, masks = folders
    if command == "predict":
        args = ["predict", str(images), "-o", str(tmp_path / "out"), "--model", str(bad), "--device", "cpu"]
    else:
        args = ["train", "--images", str(images), "--masks", str(masks), "--output", str(tmp_path / "run"),
                "--epochs", "1", "--batch-size", "2", "--patch-size", "32", "--device", "cpu", "--init", str(bad)]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-litenext: error: ") and str(bad) in lines[0], lines
