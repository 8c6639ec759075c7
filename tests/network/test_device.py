"""Device resolution: automatic choice and clear errors for unavailable or unknown devices."""

from __future__ import annotations

import pytest
import torch

from napari_litenext.network.device import resolve_device

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


@pytest.mark.parametrize("value", [None, "auto", "AUTO", " auto ", ""])
def test_auto(value):
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device(value) == torch.device(expected)


@pytest.mark.parametrize("value", ["cpu", torch.device("cpu")])
def test_cpu(value):
    assert resolve_device(value) == torch.device("cpu")


def test_returns_a_usable_device():
    device = resolve_device("auto")
    assert isinstance(device, torch.device)
    assert torch.zeros(1, device=device).device.type == device.type


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3", torch.device("cuda")])
def test_cuda_unavailable(value):
    with pytest.raises(ValueError, match="not available on this machine"):
        resolve_device(value)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_available():
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(ValueError, match="not available"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(HAS_MPS, reason="MPS is available here")
def test_mps_unavailable():
    with pytest.raises(ValueError, match="not available on this machine"):
        resolve_device("mps")


@pytest.mark.parametrize("value", ["garbage", "gpu", "cuda:x", "cpu:0:1"])
def test_unknown_device(value):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(value)
