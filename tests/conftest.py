"""Shared fixtures. Data from ../shared (next to the checkout) is optional: tests that need it skip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LITENEXT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared, or skip the test when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}; set LITENEXT_SHARED to its path")
    return SHARED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def random_checkpoint(tmp_path):
    """A random-weight LiteNeXt checkpoint (tile mode, 64 px tiles) for fast segmentation."""
    import torch

    from napari_litenext.network.checkpoint import save_checkpoint
    from napari_litenext.config import InferenceConfig, ModelCard
    from napari_litenext.network.model import LiteNeXt

    torch.manual_seed(0)
    path = tmp_path / "random.pt"
    save_checkpoint(path, LiteNeXt(), InferenceConfig(mode="tile", tile_size=64, threshold=0.5),
                    ModelCard(name="random"))
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer for the widget tests, closed by napari's ``make_napari_viewer`` after the test."""
    return make_napari_viewer()


@pytest.fixture
def disk_full(monkeypatch):
    """Make reserving disk space fail as a full disk does (ENOSPC)."""
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
