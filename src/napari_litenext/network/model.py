"""The LiteNeXt network (Tran et al., arXiv 2405.15779), computed fast.

Anatomy, following the paper's configuration (711,201 parameters with the defaults):

    stem      CLG(2x2 stride-2 conv)                      3 -> 16      @ H/2
    stages    [down: max-pool + CLG(1x1)] + mixer blocks  16..128      @ H/2 .. H/16
    bottleneck  x + CLG(3x3)(CLG(3x3)(x))                 128          @ H/16
    fusion    multi-scale attention fusion of e1..e4 guided by d4     256 @ H/2
    up        CLG(1x1 conv 256 -> 16), bilinear x2        16           @ H
    head      1x1 conv 16 -> 1                            logits       @ H

CLG is conv -> LayerNorm over channels -> exact GELU.

The fusion step is where a direct implementation spends most of its time: it upsamples five
128-channel maps to H/2, stacks them, concatenates and runs a 256 -> 16 conv. Bilinear upsampling
is linear and acts on each channel alone, so it commutes with the per-channel attention weights and
with that 1x1 conv. ``forward`` therefore folds the attention weights into the conv weight per image,
reduces each scale to 16 channels at its own resolution and upsamples only those; the result equals
the direct computation up to float rounding (the tests keep a direct reference and compare).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import InferenceConfig, ModelCard, ModelConfig

__all__ = ["LiteNeXt", "LayerNorm2d", "CLG", "MixerBlock", "Down", "ResidualBlock", "FusionUnit",
           "Fusion", "MIN_SIZE", "STRIDE"]

#: Height and width are padded to a multiple of this inside ``forward``.
STRIDE = 16
#: Smallest height or width ``forward`` accepts (reflect padding needs at least this much image).
MIN_SIZE = 16


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel vector of every pixel of an N x C x H x W tensor.

    Channels-last tensors are normalised through a zero-copy permute and the fused kernel;
    contiguous NCHW tensors are normalised in place along dim 1, which avoids the two transposed
    copies a permute would cost there.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
        scale = torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias[:, None, None], (x - mean) * scale, self.weight[:, None, None])

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


class CLG(nn.Module):
    """Convolution (with bias), LayerNorm over channels, exact GELU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        padding = kernel_size // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, groups=groups)
        self.norm = LayerNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.norm(self.conv(x)))


class MixerBlock(nn.Module):
    """ConvMixer-style block: a = CLG(3x3)(x), b = CLG(depthwise k x k)(a), out = CLG(1x1)(a + b + x)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.local = CLG(channels, channels, 3)
        self.depthwise = CLG(channels, channels, kernel_size, groups=channels)
        self.pointwise = CLG(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.local(x)
        return self.pointwise(a + self.depthwise(a) + x)


class Down(nn.Module):
    """2x2 max-pool, then CLG(1x1) from ``in_ch`` to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = CLG(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.max_pool2d(x, 2))


class ResidualBlock(nn.Module):
    """x + CLG(3x3)(CLG(3x3)(x)): the bottleneck."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = CLG(channels, channels, 3)
        self.conv2 = CLG(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class FusionUnit(nn.Module):
    """Value and key of one scale for the attention fusion.

    value: CLG(1x1 conv C -> D) at the scale's own resolution (upsampling is left to the caller).
    key:   1x1 conv C -> D of GELU(1x1 conv C -> C of (global-avg-pool + global-max-pool)),
           one D-vector per image.
    """

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.value = CLG(in_ch, dim, 1)
        self.key_in = nn.Conv2d(in_ch, in_ch, 1)
        self.key_out = nn.Conv2d(in_ch, dim, 1)

    def key(self, x: Tensor) -> Tensor:
        """B x C x h x w -> B x D."""
        pooled = x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
        hidden = F.gelu(F.linear(pooled, self.key_in.weight.flatten(1), self.key_in.bias))
        return F.linear(hidden, self.key_out.weight.flatten(1), self.key_out.bias)


class Fusion(nn.Module):
    """Multi-scale attention fusion of e1..e4 guided by the bottleneck output d4.

    Holds the parameters; the arithmetic lives in ``LiteNeXt.forward`` because the fast path merges
    it with the 1x1 conv that follows.
    """

    def __init__(self, widths: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.units = nn.ModuleList([FusionUnit(c, dim) for c in widths])
        self.score = nn.Linear(2 * dim, dim)

    def attention(self, keys: list[Tensor]) -> Tensor:
        """Per-channel softmax over the encoder scales.

        Args:
            keys: B x D keys of e1..e4 followed by d4's.

        Returns:
            B x 4 x D weights summing to 1 over dim 1.
        """
        guide = keys[-1]
        scores = torch.stack([self.score(torch.cat([k, guide], dim=1)) for k in keys[:-1]], dim=1)
        return scores.softmax(dim=1)


class LiteNeXt(nn.Module):
    """LiteNeXt binary segmentation network.

    Args:
        config: network shape; the default is the paper's 711,201-parameter model.
        inference: how the model is used (normalisation, mode, threshold, ...); the defaults of
            every ``segment`` setting. ``InferenceConfig()`` when None.
        card: the model card (name, data, recipe, scores).

    Attributes:
        config, inference, card: as given.
        sha256: digest of the checkpoint the weights came from ("" for a model not loaded from one).

    ``forward(x)`` takes B x C x H x W floats (the paper's models: RGB in [0, 1]) with H, W >= 16
    and returns B x 1 x H x W logits (foreground where logit > 0). Sizes that are not multiples of
    16 are reflect-padded inside and the logits cropped back.
    """

    def __init__(self, config: ModelConfig | None = None, inference: InferenceConfig | None = None,
                 card: ModelCard | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.config: ModelConfig = config
        self.inference: InferenceConfig = inference or InferenceConfig()
        self.card: ModelCard = card or ModelCard()
        self.sha256: str = ""
        widths = config.widths
        self.stem = CLG(config.in_channels, widths[0], 2, stride=2)
        stages = []
        for i, (width, depth) in enumerate(zip(widths, config.depths)):
            stage = nn.Module()
            stage.down = Down(widths[i - 1], width) if i else nn.Identity()
            stage.blocks = nn.Sequential(*[MixerBlock(width, config.kernel_size) for _ in range(depth)])
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        self.bottleneck = ResidualBlock(widths[-1])
        self.fusion = Fusion(widths + (widths[-1],), config.fusion_dim)
        self.up = CLG(2 * config.fusion_dim, widths[0], 1)
        self.head = nn.Conv2d(widths[0], 1, 1)
        # Weights in channels-last match the activations' layout, which spares the CPU convolution
        # a weight reorder on every call (half the time at batch 1).
        self.to(memory_format=torch.channels_last)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features e1..e4 (B x C_i x H/2^i x W/2^i) of an input whose sides are multiples of 16."""
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.down(x))
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"LiteNeXt expects a B x {self.config.in_channels} x H x W tensor, got shape "
                f"{tuple(x.shape)}; replicate grayscale to {self.config.in_channels} channels first"
            )
        height, width = x.shape[-2:]
        if height < MIN_SIZE or width < MIN_SIZE:
            raise ValueError(f"image is {height} x {width} pixels; LiteNeXt needs at least "
                             f"{MIN_SIZE} x {MIN_SIZE}: pad or upsample it first")
        pad_h, pad_w = -height % STRIDE, -width % STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        # Channels-last lets the convolutions, the permute-free LayerNorm and the fused 1x1
        # reductions run without layout copies: about 3x faster on CPU than NCHW.
        logits = self._forward_aligned(x.contiguous(memory_format=torch.channels_last))
        return logits[..., :height, :width] if (pad_h or pad_w) else logits

    def _forward_aligned(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Logits (B x 1 x H x W) from the encoder features of ``encode``.

        Split from ``forward`` so that training can reuse the encoder output (SRP reads e4).
        """
        d4 = self.bottleneck(feats[-1])
        units = self.fusion.units
        alpha = self.fusion.attention([u.key(f) for u, f in zip(units, feats + [d4])])  # B x 4 x D

        dim = self.fusion.dim
        weight = self.up.conv.weight.flatten(1)  # O x 2D: first D act on V, the rest on v_d4
        w_v, w_d = weight[:, :dim], weight[:, dim:]
        half = feats[0].shape[-2:]

        # sum_i up(W_v diag(alpha_i) v_i) + up(W_d v_d4) + bias, with each 1x1 reduction done at
        # the scale's own resolution. e4 and d4 share a resolution, so they are reduced together.
        acc = None
        last = len(feats) - 1
        for i, (unit, f) in enumerate(zip(units, feats)):
            w_i = w_v.unsqueeze(0) * alpha[:, i].unsqueeze(1)  # B x O x D
            y = _reduced_value(unit.value, f, w_i)
            if i == last:
                y = y + _reduced_value(units[-1].value, d4, w_d.unsqueeze(0))
            if y.shape[-2:] != half:
                y = F.interpolate(y, size=half, mode="bilinear", align_corners=False)
            acc = y if acc is None else acc + y
        acc = acc + self.up.conv.bias[:, None, None]
        # The head (1x1 conv) commutes with bilinear upsampling as well (the interpolation weights
        # sum to 1, so even its bias passes through): apply it first and upsample 1 channel, not 16.
        y = self.head(F.gelu(self.up.norm(acc)))
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)

    def num_parameters(self) -> int:
        """Number of parameters (711,201 for the paper's configuration)."""
        return sum(p.numel() for p in self.parameters())


#: On CPU the fusion values are computed in row blocks of about this many numbers (4 MiB of
#: float32). The e1 value is 128 channels at H/2, the largest map in the network; block by block,
#: conv -> LayerNorm -> GELU -> reduction stay in cache instead of streaming (and page-faulting)
#: tens of MB through memory, which measured 3x faster for that step. Smaller blocks are no
#: faster on an idle machine and much slower on an oversubscribed one (each op is a parallel
#: region whose threads must all be scheduled).
_BLOCK_VALUES = 1 << 20


def _reduced_value(value: CLG, x: Tensor, weight: Tensor) -> Tensor:
    """``_batched_pointwise(value(x), weight)``, in row blocks on CPU.

    Every step (1x1 conv, LayerNorm over channels, GELU, per-image 1x1 reduction) acts on each
    pixel alone, so the blocks compute exactly what the whole map would.
    """
    b, _, h, w = x.shape
    rows = max(1, _BLOCK_VALUES // (b * w * value.conv.out_channels))
    if x.device.type != "cpu" or rows >= h:  # GPUs prefer few large kernels
        return _batched_pointwise(value(x), weight)
    return torch.cat([_batched_pointwise(value(x[:, :, r:r + rows]), weight) for r in range(0, h, rows)],
                     dim=2)


def _batched_pointwise(x: Tensor, weight: Tensor) -> Tensor:
    """Per-image 1x1 convolution without bias.

    Args:
        x: B x D x h x w.
        weight: B x O x D, or 1 x O x D shared by the batch.

    Returns:
        B x O x h x w, in ``x``'s memory format.
    """
    b, d, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        flat = x.permute(0, 2, 3, 1).reshape(b, h * w, d)  # zero-copy for channels-last
        out = torch.matmul(flat, weight.transpose(1, 2))  # B x hw x O
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)
    out = torch.matmul(weight, x.reshape(b, d, h * w))  # B x O x hw
    return out.view(b, -1, h, w)
