"""TorchScript: the network traced into a module that runs without this package's code.

``LiteNeXt.forward`` branches in Python on the input's size (padding to a multiple of 16, row
blocks of the fusion step on CPU, layouts of 1 x 1 maps). Tracing records the branches taken for
the example, so the example is chosen so that they hold for every input a package accepts: sides
that are multiples of 16 (no padding), small enough that the fusion runs as one block (row
blocking only saves cache misses; the arithmetic is the same), and large enough that every feature
map is at least 2 x 2. Tests compare the traced module with the network at other sizes and batches.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..io.files import atomic_write
from ._source import refuse_existing, resolve_model

__all__ = ["TRACE_SIZE", "example_input", "trace", "save_torchscript", "export_torchscript"]

#: Edge of the example image the network is traced (and exported to ONNX) with.
TRACE_SIZE = 64


def example_input(model: Any, batch: int = 1):
    """A random B x C x 64 x 64 float tensor in [0, 1] for tracing ``model``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, model.config.in_channels, TRACE_SIZE, TRACE_SIZE, generator=generator)


def trace(model: Any):
    """``model`` (a CPU LiteNeXt in eval mode) as a traced ``torch.jit.ScriptModule``.

    The module maps N x C x H x W floats, H and W multiples of 16, to N x 1 x H x W logits.
    """
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # The TracerWarnings name exactly the size branches discussed in the module docstring, and
        # TorchScript's deprecation is moot here: it is the format being asked for.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(model, example_input(model), check_trace=False)


def export_torchscript(model_or_source: Any, out_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a traced TorchScript module of a LiteNeXt to ``out_path`` (``.pt``).

    Arguments, return value and errors as ``exchange.onnx.export_onnx``. Load the file with
    ``torch.jit.load``: it maps N x 3 x H x W floats in [0, 1] (H, W multiples of 16) to
    N x 1 x H x W logits.
    """
    path = refuse_existing(out_path, overwrite)
    traced = trace(resolve_model(model_or_source))
    return atomic_write(path, lambda tmp: save_torchscript(traced, tmp), overwrite=overwrite)


def save_torchscript(module: Any, path: str | os.PathLike) -> None:
    """``torch.jit.save``, without its deprecation warning: TorchScript is the format being asked for
    (the zoo's torchscript weights, deepImageJ's PyTorch engine)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(path))
