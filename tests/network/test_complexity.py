"""MAC counts: the paper's number, and agreement with hooks on a direct forward for other shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_litenext.network.complexity import count_macs, mac_breakdown
from napari_litenext.config import ModelConfig
from napari_litenext.network.model import LiteNeXt
from reference_litenext import reference_forward


def hooked_macs(model: LiteNeXt, height: int, width: int) -> int:
    """MACs per image counted by hooks on every conv / linear call of the direct reference forward."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        total += output[0].numel() * (per_output + (module.bias is not None))  # output[0]: one image

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.inference_mode():
            reference_forward(model, torch.rand(1, model.config.in_channels, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total


def test_paper_configuration_at_256():
    macs = count_macs()
    assert macs == 417_452_784
    assert round(macs / 1e9, 4) == 0.4175  # the specification's figure; the paper's "0.42 GFLOPs"
    assert count_macs(ModelConfig(), 256, 256) == macs
    assert count_macs(LiteNeXt()) == macs


def test_breakdown_sums_and_fusion_share():
    parts = mac_breakdown()
    assert list(parts) == ["stem", "stages", "bottleneck", "fusion", "up", "head"]
    assert sum(parts.values()) == count_macs()
    assert parts["head"] == 256 * 256 * 17
    assert parts["up"] == 128 * 128 * 16 * 257  # the 256 -> 16 conv counted at H/2, as drawn
    assert 0.16 < parts["fusion"] / sum(parts.values()) < 0.17


@pytest.mark.parametrize("config, size", [
    (ModelConfig(), (256, 256)),
    (ModelConfig(), (64, 96)),
    (ModelConfig(kernel_size=3), (32, 48)),
    (ModelConfig(depths=(2, 1, 1, 1)), (48, 32)),
    (ModelConfig(base_width=8, fusion_dim=32, depths=(1, 2, 3, 1)), (64, 64)),
    (ModelConfig(in_channels=1, base_width=4, kernel_size=5, fusion_dim=8), (16, 16)),
])
def test_matches_hooks_on_direct_forward(config, size):
    model = LiteNeXt(config)
    assert count_macs(model, *size) == hooked_macs(model, *size)
    assert count_macs(config, *size) == count_macs(model, *size)


def test_counts_padded_size():
    # The network reflect-pads to a multiple of 16 and pays for the padded pixels.
    assert count_macs(None, 100, 77) == count_macs(None, 112, 80)
    assert count_macs(None, 16, 16) < count_macs(None, 17, 16) == count_macs(None, 32, 16)


def test_scales_with_area_except_the_keys():
    # Everything but the key MLPs and the score layer scales with the pixel count.
    small, big = mac_breakdown(None, 64, 64), mac_breakdown(None, 128, 128)
    for part in ("stem", "stages", "bottleneck", "up", "head"):
        assert big[part] == 4 * small[part]
    assert big["fusion"] < 4 * small["fusion"]


def test_errors():
    with pytest.raises(ValueError, match=">= 16"):
        count_macs(None, 8, 256)
    with pytest.raises(TypeError, match="LiteNeXt or a ModelConfig"):
        count_macs("default")


def test_unknown_module_is_refused():
    model = LiteNeXt()
    model.extra = nn.Conv2d(1, 1, 1)
    with pytest.raises(RuntimeError, match="extra"):
        count_macs(model)
