"""napari-litenext: LiteNeXt segmentation for napari, scripts and the command line.

The public API is imported lazily so that ``import napari_litenext`` (done by napari at start-up to
read the plugin manifest) does not import torch::

    import napari_litenext as nl
    model = nl.load_model("nuclei")
    result = nl.predict(image, model)        # result.probabilities, result.labels
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_model": "network.registry",
    "bundled_models": "network.registry",
    "predict": "inference.predict",
    "segment": "inference.predict",
    "predict_blocks": "inference.scale",
    "predict_many": "inference.scale",
    "predict_files": "inference.batch",
    "SliceSegmenter": "inference.browse",
    "Prediction": "inference.predict",
    "postprocess": "inference.postprocess",
    "train": "training.loop",
    "TrainConfig": "training.loop",
    "evaluate": "inference.evaluate",
    "LiteNeXt": "network.model",
    "ModelConfig": "config",
    "InferenceConfig": "config",
    "ModelCard": "config",
    "save_checkpoint": "network.checkpoint",
    "load_checkpoint": "network.checkpoint",
    "export_bioimageio": "exchange.bioimageio",
    "export_onnx": "exchange.onnx",
    "load_onnx": "exchange.onnx",
    "LossConfig": "training.config",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from .network.checkpoint import load_checkpoint, save_checkpoint
    from .config import InferenceConfig, ModelCard, ModelConfig
    from .inference.evaluate import evaluate
    from .network.model import LiteNeXt
    from .inference.postprocess import postprocess
    from .inference.batch import predict_files
    from .inference.browse import SliceSegmenter
    from .inference.predict import Prediction, predict, segment
    from .inference.scale import predict_blocks, predict_many
    from .network.registry import bundled_models, load_model
    from .exchange.bioimageio import export_bioimageio
    from .exchange.onnx import export_onnx, load_onnx
    from .training.config import LossConfig
    from .training.loop import TrainConfig, train


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_litenext' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
