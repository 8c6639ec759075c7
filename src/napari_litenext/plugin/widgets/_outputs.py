"""The Segment widget's output layers: added once, then updated in place on later runs."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["put_labels", "put_probabilities"]


def _find_output(viewer: Any, name: str, kind: type) -> Any:
    for existing in viewer.layers:
        if isinstance(existing, kind) and existing.name == name and "litenext" in existing.metadata:
            return existing
    return None


def _put_layer(viewer: Any, kind: type, name: str, data: np.ndarray, settings: dict[str, Any], scale: list[float],
               translate: list[float], add: Any, **style: Any) -> Any:
    """Update our earlier output layer of that name in place, or add a new one.

    Only layers this plugin made (``"litenext"`` in their metadata) are updated: a user's own layer
    of the same name is never overwritten.
    """
    existing = _find_output(viewer, name, kind)
    if existing is not None and existing.ndim == data.ndim:
        existing.data = data
        existing.scale, existing.translate = scale, translate
        existing.metadata["litenext"] = settings
        return existing
    return add(data, name=name, scale=scale, translate=translate, metadata={"litenext": settings}, **style)


def put_labels(viewer: Any, image_name: str, labels: np.ndarray, settings: dict[str, Any], scale: list[float],
               translate: list[float]) -> Any:
    """The ``"<image> labels"`` Labels layer holding ``labels``."""
    from napari.layers import Labels

    return _put_layer(viewer, Labels, f"{image_name} labels", labels, settings, scale, translate, viewer.add_labels)


def put_probabilities(viewer: Any, image_name: str, probabilities: np.ndarray, settings: dict[str, Any],
                      scale: list[float], translate: list[float]) -> Any:
    """The ``"<image> probability"`` Image layer holding the probability map."""
    from napari.layers import Image

    return _put_layer(viewer, Image, f"{image_name} probability", probabilities, settings, scale, translate,
                      viewer.add_image, colormap="magma", contrast_limits=(0.0, 1.0), blending="additive",
                      visible=True)
