"""ONNX: export a LiteNeXt to one self-describing file, and run it with ONNX Runtime.

The exported graph maps ``input`` (N x C x H x W float32 in [0, 1], H and W multiples of 16; N, H
and W free) to ``logits`` (N x 1 x H x W). The model's settings (network shape, inference settings,
card, checkpoint digest) are a JSON string in the file's metadata under ``napari_litenext``, so
the file alone is enough to segment as napari-litenext does (``load_onnx``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, InputError
from ..io.files import atomic_write
from ._source import (SETTINGS_KEY, refuse_existing, require, resolve_model, settings_from_metadata,
                      settings_metadata)

__all__ = ["OPSET", "INPUT_NAME", "OUTPUT_NAME", "OnnxModel", "export_onnx", "onnx_bytes", "load_onnx"]

#: ONNX opset of exported graphs: supported by every ONNX Runtime since 1.12 (2022), so older
#: runtimes in deepImageJ, ilastik or on microscope PCs can run the files.
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_STRIDE = 16
_MIN_SIZE = 16


def onnx_bytes(model: Any) -> bytes:
    """The serialised ONNX model of ``model`` (a CPU LiteNeXt from ``resolve_model``), with metadata."""
    import torch

    require("onnx", "export to ONNX")
    import onnx

    from .torchscript import example_input

    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter (deprecated in torch 2.9 but kept in 2.13) traces the same
        # graph as the TorchScript weights, in under a second; torch.export takes about 15x longer
        # here for an equal graph. Its TracerWarnings are the size branches torchscript.py explains.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (example_input(model),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = f"LiteNeXt '{model.card.name}' exported by napari-litenext: {model.card.description}"
    entry = proto.metadata_props.add()
    entry.key, entry.value = SETTINGS_KEY, json.dumps(settings_metadata(model), sort_keys=True)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(model_or_source: Any, out_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a LiteNeXt as one ONNX file that carries its settings.

    Args:
        model_or_source: a LiteNeXt, a bundled model name, or a checkpoint or package path.
        out_path: the ``.onnx`` file to write (atomically).
        overwrite: replace an existing file.

    Returns:
        ``out_path`` as a Path; read it with ``load_onnx``.

    Raises:
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
        CheckpointError: ``model_or_source`` cannot be loaded.
        MissingDependencyError: the ``onnx`` package is not installed.
    """
    path = refuse_existing(out_path, overwrite)
    data = onnx_bytes(resolve_model(model_or_source))
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), overwrite=overwrite)


class OnnxModel:
    """A LiteNeXt running on ONNX Runtime: the same probabilities as the torch model, without torch.

    Attributes:
        config: network shape (``ModelConfig``).
        inference: how to pre- and post-process (``InferenceConfig``), as stored by the exporter.
        card: the model card (``ModelCard``).
        sha256: digest of the checkpoint the weights came from.
        path: the file it was read from.
        session: the ``onnxruntime.InferenceSession``.
    """

    def __init__(self, session: Any, meta: dict, path: str | os.PathLike) -> None:
        self.session = session
        self.path = Path(path)
        self.config, self.inference, self.card, self.sha256 = settings_from_metadata(meta, path)

    def __repr__(self) -> str:
        return f"OnnxModel({self.card.name!r}, {str(self.path)!r}, sha256={self.sha256[:12]!r})"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """N x 1 x H x W float32 logits of an N x C x H x W batch (see ``probabilities``)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1] != self.config.in_channels:
            raise InputError(f"expected an N x {self.config.in_channels} x H x W batch, got shape {batch.shape}; "
                             f"replicate grayscale to {self.config.in_channels} channels first")
        height, width = batch.shape[2:]
        if height < _MIN_SIZE or width < _MIN_SIZE:
            raise InputError(f"images are {height} x {width} pixels; LiteNeXt needs at least "
                             f"{_MIN_SIZE} x {_MIN_SIZE}: pad or upsample them first")
        pad_h, pad_w = -height % _STRIDE, -width % _STRIDE
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if pad_h or pad_w:
            # The torch model pads the same way inside its forward; the graph takes multiples of 16.
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return out[:, :, :height, :width]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Foreground probabilities of a batch of network inputs.

        Args:
            batch: N x C x H x W float32 in [0, 1] (C = ``config.in_channels``, 3 for RGB), as
                ``inference.preprocess.to_network_input`` makes them; H, W >= 16 (sizes that are
                not multiples of 16 are reflect-padded and cropped back, as the torch model does).

        Returns:
            N x H x W float32 in [0, 1] (sigmoid of the logits).

        Raises:
            InputError: the batch has the wrong shape.
        """
        from scipy.special import expit

        return expit(self.logits(batch)[:, 0]).astype(np.float32, copy=False)


def load_onnx(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None) -> OnnxModel:
    """An ``OnnxModel`` from a ``.onnx`` file written by ``export_onnx``, or from the ONNX weights of
    a BioImage Model Zoo package written by ``export_bioimageio`` (``.zip``, ``rdf.yaml``).

    Args:
        path: the file.
        providers: ONNX Runtime execution providers, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]``; None uses the CPU.
        threads: threads per call (None: ONNX Runtime's default, all cores).

    Raises:
        CheckpointError: the file is missing, not a readable ONNX model, or carries no
            napari-litenext settings.
        MissingDependencyError: ONNX Runtime is not installed.
    """
    from .package import is_package_path, read_package_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}; give an existing .onnx file or package")
    data = read_package_file(path, "onnx") if is_package_path(path) else path.read_bytes()
    require("onnxruntime", "run ONNX models")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable ONNX model ({first}); export it again with "
                              "napari-litenext export --format onnx") from None
    raw = session.get_modelmeta().custom_metadata_map.get(SETTINGS_KEY)
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        meta = None
    return OnnxModel(session, meta, path)
