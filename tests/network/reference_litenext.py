"""A direct, unoptimised LiteNeXt forward pass, written from the specification.

It reads the parameters of a ``napari_litenext.network.model.LiteNeXt`` but computes every step the plain
way: LayerNorm by permuting to channels-last, every fusion value upsampled to H/2, the scales
stacked, the weighted sum, the 256-channel concat and the 1x1 conv on it. The fast model must
match it.
"""

import torch
import torch.nn.functional as F


def _ln(x, norm):
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, 1e-5)
    return y.permute(0, 3, 1, 2)


def _clg(x, clg):
    return F.gelu(_ln(clg.conv(x), clg.norm))


def _mixer(x, block):
    a = _clg(x, block.local)
    b = _clg(a, block.depthwise)
    return _clg(a + b + x, block.pointwise)


def reference_forward(model, x):
    """Logits of ``model`` for x (B x 3 x H x W, H and W multiples of 16), computed directly."""
    feats = []
    h = _clg(x, model.stem)
    for i, stage in enumerate(model.stages):
        if i:
            h = _clg(F.max_pool2d(h, 2), stage.down.proj)
        for block in stage.blocks:
            h = _mixer(h, block)
        feats.append(h)
    e4 = feats[-1]
    d4 = e4 + _clg(_clg(e4, model.bottleneck.conv1), model.bottleneck.conv2)
    half = feats[0].shape[-2:]
    values, keys = [], []
    for unit, f in zip(model.fusion.units, feats + [d4]):
        v = _clg(f, unit.value)
        values.append(F.interpolate(v, size=half, mode="bilinear", align_corners=False))
        pooled = F.adaptive_avg_pool2d(f, 1) + F.adaptive_max_pool2d(f, 1)
        k = unit.key_out(F.gelu(unit.key_in(pooled)))
        keys.append(k.flatten(1))
    scores = torch.stack([model.fusion.score(torch.cat([k, keys[-1]], 1)) for k in keys[:4]], 1)
    alpha = scores.softmax(1)[..., None, None]  # B x 4 x D x 1 x 1
    fused = (torch.stack(values[:4], 1) * alpha).sum(1)
    cat = torch.cat([fused, values[-1]], 1)
    up = _clg(cat, model.up)
    up = F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
    return model.head(up)


def random_model(config=None, seed: int = 0, dtype=torch.float32):
    """A LiteNeXt with random weights and LayerNorm affine parameters away from (1, 0), so they matter."""
    from napari_litenext.network.model import LayerNorm2d, LiteNeXt

    torch.manual_seed(seed)
    model = LiteNeXt(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LayerNorm2d):
                module.weight.copy_(1 + 0.5 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
        # The default init leaves the head's logits tiny; scale them to an informative range.
        model.head.weight.mul_(4.0)
    return model.to(dtype).eval()
