"""scripts/generalisation.py: image types, the synthetic large-noisy type and the tables, on fake data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generalisation.py"


@pytest.fixture(scope="module")
def gen():
    if not SCRIPT.exists():
        pytest.skip("scripts/ is not part of this checkout")
    spec = importlib.util.spec_from_file_location("generalisation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # reads no data at import
    return module


def test_type_groups_split_colour_only_when_both_parts_are_large_enough(gen):
    ids = [f"g{i}" for i in range(3)] + [f"b{i}" for i in range(5)] + [f"d{i}" for i in range(4)]
    grey = {i: i.startswith("g") for i in ids}
    means = {i: 200.0 if i.startswith("b") else 40.0 for i in ids if not grey[i]}
    groups = gen.type_groups(ids, grey, means)
    assert groups == {"grey": ["g0", "g1", "g2"], "colour": ids[3:]}  # only 4 dark images
    groups = gen.type_groups(ids, grey, means, min_group=4)
    assert groups["colour-bright"] == ids[3:8] and groups["colour-dark"] == ids[8:]
    means["b0"] = 127.0  # not above 127: dark
    assert gen.type_groups(ids, grey, means, min_group=1)["colour-dark"] == ["b0", *ids[8:]]


def _fake_image(rng, shape=(200, 240)):
    labels = np.zeros(shape, dtype=np.uint16)
    labels[50:60, 70:82] = 3
    labels[150:156, 10:18] = 9
    image = (rng.random(shape) * 20 + 150 * (labels > 0)).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), labels


def test_large_noisy_is_deterministic_large_dim_and_keeps_the_labels_aligned(gen):
    image, labels = _fake_image(np.random.default_rng(0))
    out, lab = gen.large_noisy(image, labels, seed=7)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8 and lab.shape == (512, 512)
    assert np.array_equal(out[..., 0], out[..., 2])
    again, lab2 = gen.large_noisy(image, labels, seed=7)
    assert np.array_equal(out, again) and np.array_equal(lab, lab2)
    other, _ = gen.large_noisy(image, labels, seed=8)
    assert not np.array_equal(out, other)
    # ids 1..n; a whole nucleus inside, 4x larger in each direction
    ids = np.unique(lab)
    assert ids[0] == 0 and list(ids[1:]) == list(range(1, len(ids)))
    areas = np.bincount(lab.ravel())[1:]
    assert areas.max() in (16 * 10 * 12, 16 * 6 * 8)
    # darkened: nuclei ~0.3 * 160, background ~0.3 * 10 (plus noise), still brighter than background
    fg, bg = out[..., 0][lab > 0].mean(), out[..., 0][lab == 0].mean()
    assert 35 < fg < 60 and bg < 10
    assert out[..., 0][lab == 0].std() > 1  # noise added


def test_large_noisy_refuses_bad_input_and_falls_back_to_the_largest_nucleus(gen):
    image, labels = _fake_image(np.random.default_rng(1))
    with pytest.raises(ValueError, match="no object"):
        gen.large_noisy(image, np.zeros_like(labels), seed=0)
    with pytest.raises(ValueError, match="must match"):
        gen.large_noisy(image[:100], labels, seed=0)
    # a nucleus too large to fit whole in any window: the window is centred on it
    big = np.zeros((130, 130), dtype=np.int32)
    big[:, 5:125] = 4
    _, lab = gen.large_noisy(np.zeros((130, 130), np.uint8), big, seed=0, crop=128)
    assert lab.max() == 1 and lab.mean() > 0.8


def test_synthetic_seed_depends_on_the_id_only(gen):
    assert gen.synthetic_seed("abc") == gen.synthetic_seed("abc") != gen.synthetic_seed("abd")


def test_summary_and_table_average_per_type_and_in_total(gen):
    rows = [{"types": ["colour", "colour-bright"], "dice": 0.5, "f1_50": 0.4, "aji": 0.3, "fragments": 2,
             "merges": 1, "splits": 0, "missed": 1},
            {"types": ["grey"], "dice": 0.9, "f1_50": 0.8, "aji": 0.7, "fragments": 0, "merges": 0,
             "splits": 1, "missed": 0}]
    means = gen.summary(rows, ["grey", "colour", "colour-bright", "colour-dark"])
    assert means["total"]["images"] == 2 and means["total"]["dice"] == pytest.approx(0.7)
    assert means["colour-bright"]["fragments"] == 2 and means["colour-dark"]["images"] == 0
    text = gen.table("m", "test", means)
    assert "| m | test | total | 2 | 0.7000 | 0.6000 | 0.5000 | 1.00 | 0.50 | 0.50 | 0.50 |" in text
    assert "| m | test | colour-dark | 0 | - |" in text
