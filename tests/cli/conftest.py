"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_litenext.io.images import write_png


@pytest.fixture
def folders(tmp_path):
    """im/ and ma/ with four 48x48 images of one bright disc each, and their masks (c0 .. c3)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    for i in range(4):
        cy, cx = rng.integers(12, 36, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
        write_png(tmp_path / "im" / f"c{i}.png", (mask * 200 + 20).astype(np.uint8))
        write_png(tmp_path / "ma" / f"c{i}_mask.png", (mask * 255).astype(np.uint8))
    return tmp_path
