"""Models that leave napari-litenext and come back: BioImage Model Zoo packages, ONNX, TorchScript.

* ``export_bioimageio(model, "model.zip")``: a BioImage Model Zoo package (format 0.5) with
  pytorch_state_dict (self-contained architecture file), TorchScript and ONNX weights, test
  tensors, cover, model card and this package's settings, so that ``load_model`` rebuilds the
  model exactly; ``zoo_test`` runs the zoo's own test on it.
* ``export_onnx(model, "model.onnx")``: one ONNX file carrying the settings in its metadata;
  ``load_onnx`` turns it into an ``OnnxModel`` that runs on ONNX Runtime without torch.
* ``export_torchscript(model, "model.pt")``: a traced TorchScript module.
* ``read_package``: the checkpoint in a package (``load_model`` uses it).

The modules import torch, onnx, onnxruntime and bioimageio inside the functions that use them, so
importing this package costs only numpy.
"""

from __future__ import annotations

from ._source import MissingDependencyError
from .bioimageio import export_bioimageio, zoo_test
from .onnx import OnnxModel, export_onnx, load_onnx
from .package import is_package_path, read_package
from .torchscript import export_torchscript

__all__ = ["export_bioimageio", "zoo_test", "export_onnx", "load_onnx", "OnnxModel", "export_torchscript",
           "read_package", "is_package_path", "MissingDependencyError"]
