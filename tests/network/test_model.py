"""The fast LiteNeXt forward equals the direct reference (tests/network/reference_litenext.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_litenext.network import model as model_module
from napari_litenext.config import ModelConfig
from napari_litenext.network.model import MIN_SIZE, LiteNeXt
from reference_litenext import random_model, reference_forward

ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> LiteNeXt:
    return random_model()


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> float:
    """Max abs difference, asserting it is within ``atol`` and that ``b`` is not trivially flat."""
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol}"
    assert b.std().item() > 0.05, "reference output is too flat for the comparison to mean anything"
    return err


def test_parameter_counts():
    assert LiteNeXt().num_parameters() == 711_201
    assert LiteNeXt(ModelConfig(kernel_size=3)).num_parameters() == 701_601
    assert sum(p.numel() for p in LiteNeXt().parameters() if p.requires_grad) == 711_201


def test_state_dict_has_120_tensors_like_the_authors_layout():
    assert len(LiteNeXt().state_dict()) == 120


@pytest.mark.parametrize("batch, height, width", [(1, 16, 16), (3, 64, 96), (2, 256, 256), (1, 48, 16)])
def test_fast_equals_reference(model, batch, height, width):
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.inference_mode():
        close(model(x), reference_forward(model, x))


@pytest.mark.parametrize("height, width", [(100, 77), (17, 16), (16, 45), (33, 130)])
def test_odd_sizes_equal_reference_on_padded_input(model, height, width):
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    pad_h, pad_w = -height % 16, -width % 16
    with torch.inference_mode():
        expected = reference_forward(model, F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"))
        close(model(x), expected[..., :height, :width])


def test_channels_last_and_noncontiguous_inputs(model):
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = reference_forward(model, x)
        close(model(x.contiguous(memory_format=torch.channels_last)), expected)
        wide = torch.rand(2, 3, 64, 96)
        wide[..., ::2] = x
        close(model(wide[..., ::2]), expected)  # a strided view


def test_reference_input_layout_does_not_matter(model):
    # The reference must be a fair yardstick in either layout.
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        a = reference_forward(model, x)
        b = reference_forward(model, x.contiguous(memory_format=torch.channels_last))
    assert (a - b).abs().max().item() < 1e-5


def test_float64_matches_reference_tightly():
    model64 = random_model(dtype=torch.float64)
    x = torch.rand(2, 3, 48, 64, dtype=torch.float64)
    with torch.inference_mode():
        out = model64(x)
        assert out.dtype == torch.float64
        close(out, reference_forward(model64, x), atol=1e-11)


def test_batch_items_are_independent(model):
    # The fast path folds attention weights into the conv per image: no mixing across the batch.
    x = torch.rand(3, 3, 32, 48)
    with torch.inference_mode():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert (together - alone).abs().max().item() < 1e-5


@pytest.mark.parametrize("block", [None, 1, 3000])
def test_row_blocks_change_nothing(model, monkeypatch, block):
    # On CPU the fusion values are computed in row blocks; force one row per block, partial last
    # blocks (3000 values: 1 or 2 rows here) and the whole map, and compare with the reference.
    if block is not None:
        monkeypatch.setattr(model_module, "_BLOCK_VALUES", block)
    x = torch.rand(2, 3, 80, 48, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        close(model(x), reference_forward(model, x))


@pytest.mark.parametrize("block", [None, 1])
def test_gradients_equal_reference(monkeypatch, block):
    if block is not None:
        monkeypatch.setattr(model_module, "_BLOCK_VALUES", block)
    model = random_model(seed=3).train()
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    target = (torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(4)) > 0.5).float()

    def grads(forward):
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(forward(xi), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, xi.grad

    loss_fast, g_fast, gx_fast = grads(model)
    loss_ref, g_ref, gx_ref = grads(lambda xi: reference_forward(model, xi))
    assert abs(loss_fast.item() - loss_ref.item()) < 1e-6
    assert set(g_fast) == set(g_ref) and len(g_fast) == 120
    for name in g_ref:
        scale = g_ref[name].abs().max().item()
        err = (g_fast[name] - g_ref[name]).abs().max().item()
        assert err <= 1e-5 + 1e-4 * scale, f"{name}: gradient differs by {err:.3g} (scale {scale:.3g})"
    assert (gx_fast - gx_ref).abs().max().item() <= 1e-5 + 1e-4 * gx_ref.abs().max().item()
    assert all(g.abs().sum() > 0 for g in g_fast.values()), "every parameter must receive a gradient"


@pytest.mark.parametrize("height, width", [(16, 16), (17, 31), (50, 16), (129, 67)])
def test_output_shape_for_any_size(model, height, width):
    with torch.inference_mode():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape, match", [
    ((1, 3, 15, 64), "at least 16 x 16"),
    ((1, 3, 64, 8), "at least 16 x 16"),
    ((1, 1, 32, 32), "replicate grayscale"),
    ((1, 4, 32, 32), "B x 3 x H x W"),
    ((3, 32, 32), "B x 3 x H x W"),
])
def test_bad_inputs_raise_value_error(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(torch.rand(*shape))
    assert MIN_SIZE == 16


@pytest.mark.parametrize("config", [
    ModelConfig(depths=(2, 1, 1, 1)),
    ModelConfig(base_width=8),
    ModelConfig(base_width=8, depths=(2, 2, 1, 1), kernel_size=5, fusion_dim=32),
    ModelConfig(in_channels=1, base_width=4, fusion_dim=16),
])
def test_other_configurations_build_and_match_reference(config):
    model = random_model(config, seed=5)
    x = torch.rand(2, config.in_channels, 32, 48)
    with torch.inference_mode():
        out = model(x)
        assert out.shape == (2, 1, 32, 48)
        close(out, reference_forward(model, x))
    assert len(model.stages[0].blocks) == config.depths[0]
    assert model.stem.conv.out_channels == config.base_width


def test_default_configuration_is_the_papers():
    model = LiteNeXt()
    assert model.config == ModelConfig()
    assert [s.blocks[0].depthwise.conv.kernel_size for s in model.stages] == [(7, 7)] * 4
    assert model.fusion.score.in_features == 256 and model.up.conv.in_channels == 256
