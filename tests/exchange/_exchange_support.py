"""Helpers shared by the exchange tests."""

from __future__ import annotations


def tiny_model(**inference):
    """A random LiteNeXt of the smallest shape (fast to export and test), with settings and a card."""
    import torch

    from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig
    from napari_litenext.network.model import LiteNeXt

    torch.manual_seed(0)
    settings = {"mode": "tile", "tile_size": 64, "normalisation": "percentile", **inference}
    card = ModelCard(name="tiny", description="Random weights for tests.", data="BBBC038 (tests only)",
                     metrics={"test_dice": 0.5})
    return LiteNeXt(ModelConfig(base_width=4, fusion_dim=8), InferenceConfig(**settings), card).eval()
