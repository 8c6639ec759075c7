"""Losses on tiny tensors with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_litenext.errors import SettingsError
from napari_litenext.training.config import LossConfig
from scipy import ndimage as ndi

from napari_litenext.training.losses import (DICE_SMOOTH, MWL_PRESETS, MarginalWeightLoss, SegmentationLoss, bce,
                                    build_loss, dice_loss, margin_weight_map)


def _mask(h, w, r0, r1, c0, c1):
    m = torch.zeros(1, 1, h, w)
    m[..., r0:r1, c0:c1] = 1.0
    return m


# ---------------------------------------------------------------- weight map

def test_weight_map_band_is_k_minus_one_wide():
    # 9x9 square (rows/cols 3..11) in 15x15, k = 3: dilation 11x11 (121 px), erosion 7x7 (49 px)
    # -> margin 72 px, background 225 - 121 = 104 px
    y = _mask(15, 15, 3, 12, 3, 12)
    w = margin_weight_map(y, kernel_size=3, w_b=1.0, w_o=10.0, w_m=100.0)[0, 0]
    assert int((w == 10).sum()) == 49
    assert int((w == 100).sum()) == 72
    assert int((w == 1).sum()) == 104
    # along the middle row: background up to col 1, margin at 2 (outside) and 3 (inside), core from 4
    np.testing.assert_array_equal(w[7, :6].numpy(), [1, 1, 100, 100, 10, 10])
    np.testing.assert_array_equal(w[7, 9:].numpy(), [10, 10, 100, 100, 1, 1])
    # k = 5: 13x13 dilation, 5x5 erosion -> a 4-px band (2 outside, 2 inside)
    w5 = margin_weight_map(y, kernel_size=5, w_b=1.0, w_o=10.0, w_m=100.0)[0, 0]
    assert (int((w5 == 10).sum()), int((w5 == 100).sum()), int((w5 == 1).sum())) == (25, 144, 56)
    np.testing.assert_array_equal(w5[7, :7].numpy(), [1, 100, 100, 100, 100, 10, 10])


def test_weight_map_object_touching_border_is_eroded_there():
    # 9x9 square against the left edge (cols 0..8): zero padding erodes column 0 as well
    y = _mask(15, 15, 3, 12, 0, 9)
    w = margin_weight_map(y, kernel_size=3, w_b=1.0, w_o=10.0, w_m=100.0)[0, 0]
    np.testing.assert_array_equal(w[7, :11].numpy(), [100, 10, 10, 10, 10, 10, 10, 10, 100, 100, 1])
    assert int((w == 10).sum()) == 7 * 7            # erosion rows 4..10, cols 1..7
    assert int((w == 100).sum()) == 11 * 10 - 49    # dilation rows 2..12, cols 0..9


def test_weight_map_empty_and_full_masks():
    empty = torch.zeros(2, 1, 6, 7)
    np.testing.assert_array_equal(margin_weight_map(empty, 3, w_b=2.5, w_o=3.0, w_m=6.0).numpy(), 2.5)
    # full 5x5 mask, k = 3: with zero padding the outer ring (16 px) is margin, the 3x3 centre is core
    full = torch.ones(1, 1, 5, 5)
    w = margin_weight_map(full, 3, w_b=1.0, w_o=3.0, w_m=6.0)[0, 0].numpy()
    expected = np.full((5, 5), 6.0)
    expected[1:4, 1:4] = 3.0
    np.testing.assert_array_equal(w, expected)


def test_weight_map_matches_scipy_morphology(rng):
    y = (rng.random((3, 1, 20, 17)) > 0.6).astype(np.float32)
    k = 5
    got = margin_weight_map(torch.from_numpy(y), k, w_b=1.0, w_o=3.0, w_m=6.0).numpy()
    for i in range(3):
        d = ndi.grey_dilation(y[i, 0], size=(k, k), mode="constant", cval=0.0)
        e = ndi.grey_erosion(y[i, 0], size=(k, k), mode="constant", cval=0.0)
        np.testing.assert_array_equal(got[i, 0], 3 * e + 6 * (d - e) + 1 * (1 - d))


def test_weight_map_binarises_and_has_no_grad():
    soft = _mask(9, 9, 2, 7, 2, 7) * 0.9 + 0.05  # 0.95 inside, 0.05 outside
    soft.requires_grad_(True)
    w = margin_weight_map(soft, 3)
    assert not w.requires_grad and w.dtype == torch.float32
    np.testing.assert_array_equal(w.numpy(), margin_weight_map(_mask(9, 9, 2, 7, 2, 7), 3).numpy())


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=4), "odd"),
    (dict(kernel_size=0), "odd"),
    (dict(kernel_size=3.0), "odd"),
    (dict(w_b=-1.0), "w_b"),
    (dict(w_m=float("nan")), "w_m"),
])
def test_weight_map_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        margin_weight_map(torch.zeros(1, 1, 4, 4), **kwargs)


def test_weight_map_needs_4d():
    with pytest.raises(ValueError, match="B x C x H x W"):
        margin_weight_map(torch.zeros(4, 4), 3)


# ---------------------------------------------------------------- dice and bce

def test_dice_loss_is_per_image_then_mean():
    target = torch.zeros(2, 1, 4, 4)
    target[:, :, :2, :2] = 1.0                     # 4 px each
    probs = torch.stack([target[0], torch.zeros(1, 4, 4)])
    # image 0 perfect: loss 0; image 1 all zero: 1 - (0 + 1) / (0 + 4 + 1) = 0.8; mean 0.4
    # (a Dice pooled over the batch would give 1 - 9/13)
    assert DICE_SMOOTH == 1.0
    assert dice_loss(probs, target).item() == pytest.approx(0.4)
    # empty target, empty prediction: no loss thanks to the smoothing term
    assert dice_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)).item() == 0.0
    with pytest.raises(ValueError, match="smooth"):
        dice_loss(probs, target, smooth=0.0)
    with pytest.raises(ValueError, match="shape"):
        dice_loss(probs, target[:1])


def test_bce_matches_formula():
    z = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    y = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    per = [math.log(2), math.log1p(math.exp(2.0)), math.log1p(math.exp(-1.0)), math.log1p(math.exp(-3.0))]
    assert bce(z, y).item() == pytest.approx(sum(per) / 4, rel=1e-6)
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert bce(z, y, w).item() == pytest.approx(sum(p * k for p, k in zip(per, [1, 2, 3, 4])) / 4, rel=1e-6)


# ---------------------------------------------------------------- full losses

def test_mwl_value_hand_computed():
    # zero logits: every pixel's BCE is ln 2 and every probability 0.5.
    # 9x9 square in 15x15, k = 3, boundary weights (w_b 1, w_o 3, w_m 6):
    # mean W = (49*3 + 72*6 + 104*1) / 225 = 683 / 225
    # Dice: 1 - (2 * 0.5 * 81 + 1) / (0.5 * 225 + 81 + 1) = 1 - 82 / 194.5
    y = _mask(15, 15, 3, 12, 3, 12)
    loss = MarginalWeightLoss(kernel_size=3)
    expected = 683 / 225 * math.log(2) + 1 - 82 / 194.5
    assert loss(torch.zeros_like(y), y).item() == pytest.approx(expected, rel=1e-6)
    parts = loss.last_components
    assert parts["bce"].item() == pytest.approx(683 / 225 * math.log(2), rel=1e-6)
    assert parts["dice"].item() == pytest.approx(1 - 82 / 194.5, rel=1e-6)
    assert not any(v.requires_grad for v in parts.values())


def test_dice_bce_equals_mwl_with_unit_weights(rng):
    z = torch.from_numpy(rng.normal(size=(2, 1, 12, 10)).astype(np.float32))
    y = (torch.from_numpy(rng.random((2, 1, 12, 10))) > 0.5).float()
    plain = build_loss(LossConfig(loss="dice_bce"))
    ones = build_loss(LossConfig(w_b=1, w_o=1, w_m=1))
    assert plain(z, y).item() == pytest.approx(ones(z, y).item(), rel=1e-6)
    assert plain(z, y).item() == pytest.approx((bce(z, y) + dice_loss(torch.sigmoid(z), y)).item(), rel=1e-6)


def test_gradients_flow_through_logits_only():
    y = _mask(10, 10, 2, 7, 3, 8).requires_grad_(True)
    z = torch.zeros(1, 1, 10, 10, requires_grad=True)
    loss = MarginalWeightLoss(kernel_size=3)(z, y)
    loss.backward()
    assert y.grad is None
    assert z.grad is not None and torch.isfinite(z.grad).all()
    # pixels in the margin pull harder than core pixels (w_m 6 vs w_o 3)
    assert abs(z.grad[0, 0, 2, 5].item()) > abs(z.grad[0, 0, 4, 5].item())


def test_presets_and_overrides():
    assert MWL_PRESETS["boundary"] == {"w_b": 1.0, "w_o": 3.0, "w_m": 6.0, "kernel_size": 7}
    assert MWL_PRESETS["authors-code"] == {"w_b": 5.0, "w_o": 3.0, "w_m": 2.0, "kernel_size": 7}
    default = MarginalWeightLoss()
    assert (default.w_b, default.w_o, default.w_m, default.kernel_size) == (1, 3, 6, 7)
    assert build_loss().settings == default.settings
    config = LossConfig(preset="authors-code", w_m=4.0, kernel_size=np.int64(5))
    assert (config.w_b, config.w_o, config.w_m, config.kernel_size) == (5.0, 3.0, 4.0, 5)
    assert type(config.kernel_size) is int
    assert build_loss(config).settings == {"name": "mwl", "w_b": 5.0, "w_o": 3.0, "w_m": 4.0, "kernel_size": 5,
                                           "smooth": 1.0}
    assert build_loss(LossConfig(loss="dice_bce")).settings == {"name": "dice_bce", "smooth": 1.0}
    assert config.describe() == ("Marginal Weight Loss (w_b 5, w_o 3, w_m 4, kernel 5; authors-code preset, "
                                 "changed w_m, kernel_size) + SRP (lambda 0.1, tau 0.99)")
    assert LossConfig(loss="dice_bce", srp=False).describe() == "soft Dice + BCE"


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=6), "odd"),
    (dict(w_o=-0.5), "w_o"),
    (dict(smooth=0), "smooth"),
])
def test_mwl_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarginalWeightLoss(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(preset="margin"), "unknown MWL preset"),
    (dict(loss="focal"), "unknown loss"),
    (dict(loss="dice_bce", w_m=6), "only apply to the 'mwl'"),
    (dict(kernel_size=4), "odd positive"),
    (dict(w_b=float("nan")), "w_b must be a finite number"),
    (dict(srp_lambda=-1), "SRP lambda"),
    (dict(srp_tau=1.0), "SRP tau"),
])
def test_loss_config_errors(kwargs, match):
    with pytest.raises(SettingsError, match=match):
        LossConfig(**kwargs)


def test_build_loss_takes_a_config_only():
    with pytest.raises(ValueError, match="takes a LossConfig"):
        build_loss("mwl")


@pytest.mark.parametrize("z_shape, y_shape, match", [
    ((1, 1, 8, 8), (1, 1, 8, 9), "differs"),
    ((1, 8, 8), (1, 8, 8), "B x 1 x H x W"),
])
def test_forward_shape_errors(z_shape, y_shape, match):
    for loss in (build_loss(LossConfig(loss="dice_bce")), build_loss()):
        with pytest.raises(ValueError, match=match):
            loss(torch.zeros(z_shape), torch.zeros(y_shape))


def test_half_precision_logits_are_scored_in_float32():
    y = _mask(8, 8, 2, 6, 2, 6)
    z = torch.randn(1, 1, 8, 8)
    loss = build_loss(LossConfig(kernel_size=3))
    full = loss(z, y)
    half = loss(z.half(), y)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-2)
