"""Linking instance ids through Z: shifted disks keep one id; separate objects stay apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.errors import SettingsError
from napari_litenext.inference.predict import predict
from napari_litenext.inference.stitch import link_slice, stitch_stack


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _shifted_disks(nz=6, shape=(64, 64)):
    """Two disks drifting 2 px per slice; ids unique across the stack as segment gives them."""
    stack = np.zeros((nz,) + shape, np.int32)
    next_id = 1
    for z in range(nz):
        for cy, cx in ((20, 14 + 2 * z), (44, 40 - 2 * z)):
            stack[z][_disc(shape, cy, cx, 7)] = next_id
            next_id += 1
    return stack


def test_link_slice_one_to_one_best_first():
    prev = np.zeros((10, 10), np.int32)
    prev[0:4, 0:4] = 1
    prev[0:4, 5:9] = 2
    cur = np.zeros((10, 10), np.int32)
    cur[0:4, 1:5] = 7      # IoU with 1: 12/20; with 2: 0
    cur[0:4, 5:8] = 8      # IoU with 2: 12/16
    cur[6:9, 6:9] = 9      # overlaps nothing
    assert link_slice(prev, cur, 0.5) == {7: 1, 8: 2}
    assert link_slice(prev, cur, 0.7) == {8: 2}
    assert link_slice(prev, np.zeros_like(cur), 0.5) == {}


def test_shifted_disks_keep_one_id_through_the_stack():
    stack = _shifted_disks()
    assert len(np.unique(stack)) == 13
    assert stitch_stack(stack, 0, 0.3) == 10
    ids = [set(np.unique(stack[z])) - {0} for z in range(stack.shape[0])]
    assert all(s == ids[0] for s in ids) and len(ids[0]) == 2


def test_threshold_controls_linking_and_other_axes_are_kept_apart():
    stack = _shifted_disks()
    untouched = stack.copy()
    assert stitch_stack(stack, 0, 0.99) == 0
    np.testing.assert_array_equal(stack, untouched)
    tz = np.stack([_shifted_disks(), _shifted_disks() + 100 * (_shifted_disks() > 0)])  # T x Z x Y x X
    stitch_stack(tz, 1, 0.3)
    assert {len(set(np.unique(tz[t])) - {0}) for t in range(2)} == {2}
    assert not (set(np.unique(tz[0])) - {0}) & (set(np.unique(tz[1])) - {0})  # time points stay apart
    with pytest.raises(SettingsError, match="stitch_threshold"):
        stitch_stack(stack, 0, 1.5)


class _Bright(nn.Module):
    """Logits 12 * (red - 0.5): foreground where the image is bright."""

    def __init__(self, **inference):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(12.0))
        self.inference, self.card, self.sha256 = InferenceConfig(**inference), ModelCard(name="bright"), ""

    def forward(self, x):
        return self.w * (x[:, :1] - 0.5)


def test_segment_links_through_z_when_the_model_or_the_caller_asks():
    image = (_shifted_disks() > 0).astype(np.uint8) * 255
    model = _Bright(mode="tile", tile_size=64, instances=True)
    plain = predict(image, model, axes="ZYX").labels
    assert len(np.unique(plain)) - 1 == 12
    linked = predict(image, model, axes="ZYX", stitch_threshold=0.3)
    assert len(np.unique(linked.labels)) - 1 == 2 and linked.settings["stitch_threshold"] == 0.3
    model.inference = model.inference.with_overrides(stitch_threshold=0.3)
    assert len(np.unique(predict(image, model, axes="ZYX").labels)) - 1 == 2
    # a time axis is not a Z axis: nothing is linked through it
    assert len(np.unique(predict(image, model, axes="TYX").labels)) - 1 == 12
