"""Segmenting images as users have them: any size, dtype, channel layout or stack.

``segment`` is a generator that yields ``Progress`` events and returns a ``Prediction``; it lets a
GUI show progress and cancel between batches. ``predict`` runs it to the end.

Memory: the intensity range is computed once on the whole image (subsampled) and applied per
tile, so no full-size float copy of the input is ever made. Full-size arrays are the input (as
given), the float32 probability map (4 bytes/pixel) and the labels (1 byte/pixel, or 4 with
instances); on CPU the network sees at most a quarter megapixel (one 512 x 512 tile) per call.
With ``workdir`` the two outputs are memory-mapped files and a memory-mapped input (see
``io.read_image_with_axes``) is read tile by tile, so a stack larger than RAM needs memory for
only a few slices at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import Cancelled
from ..progress import Progress, run_to_end
from .layout import MIN_IMAGE_SIZE, arrange, infer_axes
from . import lazy
from .lazy import is_lazy
from .object_size import segment_at_object_size
from .postprocess import continue_ids, postprocess_stack
from .preprocess import InputError, to_network_input
from .resize import resize_bilinear
from .stitch import stitch_as_configured
from .sink import open_sink, temporary_store_path
from .tiling import TileGrid

if TYPE_CHECKING:  # pragma: no cover
    from ..network.model import LiteNeXt

__all__ = ["Progress", "Prediction", "Cancelled", "segment", "predict", "infer_axes", "MIN_IMAGE_SIZE"]

# Pixels per network call on CPU: batching gains little there, while activations cost about
# 0.5 KB per pixel, so a cap keeps peak memory near 130 MB whatever ``batch_size`` says.
_CPU_BATCH_PIXELS = 512 * 512
_WHOLE = (slice(None), slice(None))



@dataclass
class Prediction:
    """Result of ``predict``.

    Attributes:
        probabilities: float32 foreground probability, the input's shape without the channel axis
            (axes in ``settings["axes"]``): a numpy array, or a zarr array when written to a store
            (None when a store was asked not to keep it).
        labels: same shape; uint8 0/1, or int32 instance ids with ``instances=True``: a numpy
            array, or the store's zarr array (``settings["store"]`` is then its path).
        settings: everything that determined the result (model name and sha256, mode, threshold,
            normalisation range, axes, ...), JSON-serialisable.
    """

    probabilities: Any
    labels: Any
    settings: dict[str, Any] = field(default_factory=dict)


def segment(image: Any, model: LiteNeXt, *, axes: str | None = None, channel: int | None = None,
            threshold: float | None = None, instances: bool | None = None, min_size: int | None = None,
            stitch_threshold: float | None = None, adaptive: bool | None = None,
            object_size: float | str | None = None,
            mode: str | None = None, tile_size: int | None = None, tile_overlap: float | None = None,
            batch_size: int = 8, device: Any = None, should_stop: Callable[[], bool] | None = None,
            workdir: str | os.PathLike | None = None, out: Any = None, keep_probabilities: bool = True,
            value_range: tuple[float, float] | None = None) -> Generator[Progress, None, Prediction]:
    """Segment an image, yielding progress; the generator's return value is the ``Prediction``.

    Args:
        image: a 2D image or a stack, any integer, float or bool dtype (see ``infer_axes``): a
            numpy array (memory maps included) or a lazy array (dask, zarr, h5py: anything with
            ``shape``, ``dtype`` and slicing), which is read a slice at a time and never whole (see
            ``inference.lazy``); in tile mode a lazy slice larger than ``lazy.SLICE_PIXELS`` is
            segmented block by block into a store (``inference.scale``), so memory stays bounded.
        model: a LiteNeXt (from ``load_model``), or an ``exchange.OnnxModel`` (``load_onnx``) to
            run the network on ONNX Runtime; its ``inference`` settings are the defaults of every
            setting below.
        axes: one letter per dimension from T, Z, C, Y, X (e.g. ``"CYX"``, ``"ZYXC"``); inferred
            when None. T and Z axes are processed slice by slice into one output stack.
        channel: index of the channel to segment in multichannel images; None uses RGB (alpha
            dropped) for 3/4 channels and requires a choice otherwise.
        threshold, instances, min_size, mode, tile_size, tile_overlap: None takes the model's
            stored value (``model.inference``), so every caller gets the same labels for the same
            settings. ``mode`` is ``"tile"`` (native resolution, overlapping tiles blended
            smoothly) or ``"resize"`` (whole image resized to ``inference.input_size``);
            ``instances`` splits touching objects into numbered instances.
        stitch_threshold: with instances and a Z axis, link ids through the stack (an object
            takes the id of the one in the previous slice it overlaps with at least this IoU;
            0 = off); None takes the model's.
        adaptive: adapt post-processing to the objects in the image; None takes the model's. Not
            applied when a large lazy slice is segmented block by block (``settings["adaptive"]``
            then says so, see ``inference.scale``).
        object_size: the typical object diameter in pixels in this image, so that it is rescaled
            to the object size the model was trained at (``inference.object_size``): 0 = native
            scale (off), ``"auto"`` estimates it from a first pass at native scale; None takes the
            model's. Not applied (recorded in ``settings["object_size"]``) in resize mode, with
            ``out``, ``workdir`` or a lazy input too large for memory; a number given for those
            raises ``SettingsError``.
        batch_size: most tiles (or slices) per network call; on CPU also capped by pixel count.
        device: torch device for the model (moved there); None keeps the model where it is.
        should_stop: called before each batch; returning True raises ``Cancelled``.
        workdir: an existing folder for disk-backed outputs: the probabilities and labels are then
            memory-mapped ``.npy`` files there instead of arrays in memory. The caller removes the
            folder once done with the ``Prediction``.
        out: write the labels into a zarr store, a few slices at a time, instead of returning
            full-size arrays: a path (a new standalone OME-Zarr labels store) or an
            ``io.ngff.LabelStore`` (e.g. labels beside an OME-Zarr image). A lazy input whose
            outputs would exceed 1 GiB gets a temporary store when ``out`` is None (its path is
            ``settings["store"]``; the caller removes it).
        keep_probabilities: with a store, False drops the probability map
            (``Prediction.probabilities`` is then None) instead of keeping it in a zarr array
            beside the labels.
        value_range: the intensity range (lo, hi) to normalise with, computed beforehand on the
            whole image (blocks of one image segmented separately share it); None computes it.

    Yields:
        ``Progress`` after each batch and each post-processed slice.

    Returns:
        ``Prediction`` (as the generator's ``StopIteration.value``).

    Raises:
        InputError: an unusable image (wrong dimensions, smaller than 16 x 16, NaN or infinite
            values, unknown axes, channel out of range, ...).
        SettingsError: a setting out of range (threshold, tile size, ...); an object size for a
            model that does not record its trained object size, or a number for an input it
            cannot be applied to.
        Cancelled: ``should_stop()`` returned True.
        FileExistsError: ``out`` exists (a ``LabelStore`` made with ``overwrite=False``).
    """
    import torch

    inference = model.inference.with_overrides(threshold=threshold, instances=instances, min_size=min_size,
                                                stitch_threshold=stitch_threshold, adaptive=adaptive,
                                                object_size=object_size,
                                                mode=mode, tile_size=tile_size, tile_overlap=tile_overlap)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if inference.object_size:
        options = dict(axes=axes, channel=channel, threshold=threshold, instances=instances, min_size=min_size,
                       stitch_threshold=stitch_threshold, adaptive=adaptive, mode=mode, tile_size=tile_size,
                       tile_overlap=tile_overlap, batch_size=batch_size, device=device, should_stop=should_stop,
                       workdir=workdir, out=out, keep_probabilities=keep_probabilities, value_range=value_range)
        return (yield from segment_at_object_size(segment, image, model, inference, object_size, options))
    layout = arrange(image, axes, channel)
    image, axes, stack_axes, pixels = layout.source, layout.axes, layout.stack_axes, layout.pixels
    stack_shape, height, width = layout.stack_shape, layout.height, layout.width
    if value_range is None:
        value_range = layout.intensity_range(inference)
    label_dtype = np.int32 if inference.instances else np.uint8
    if is_lazy(image) and height * width > lazy.SLICE_PIXELS and inference.mode == "tile" and workdir is None:
        # A slice too large to hold whole: blocks of the whole image's tile grid bound memory.
        from .scale import DEFAULT_BLOCK_SIZE, segment_blocks_of

        _place_model(model, device, torch)
        edge = max(64, min(DEFAULT_BLOCK_SIZE, math.isqrt(lazy.SLICE_PIXELS) // 16 * 16))
        return (yield from segment_blocks_of(
            image, model, out=out if out is not None else temporary_store_path(), axes=axes, channel=channel,
            threshold=inference.threshold, instances=inference.instances, min_size=inference.min_size,
            stitch_threshold=inference.stitch_threshold, adaptive=inference.adaptive,
            object_size=inference.object_size, mode=inference.mode, block_size=edge, tile_size=inference.tile_size,
            tile_overlap=inference.tile_overlap, batch_size=batch_size, keep_probabilities=keep_probabilities,
            should_stop=should_stop, value_range=value_range))
    out_shape = stack_shape + (height, width)
    sink, store = open_sink(out, is_lazy(image), out_shape, label_dtype, stack_axes + "YX",
                            lambda name, shape, dtype: _allocate(workdir, name, shape, dtype), keep_probabilities)

    from ..exchange.onnx import OnnxModel

    onnx = isinstance(model, OnnxModel)  # ONNX Runtime does the network's work; no torch forward
    dev = torch.device("cpu") if onnx else _place_model(model, device, torch)
    was_training = not onnx and model.training
    if not onnx:
        model.eval()
    try:
        settings = {
            "model": model.card.name, "sha256": model.sha256,
            "mode": inference.mode, "threshold": inference.threshold, "instances": inference.instances,
            "min_size": inference.min_size, "adaptive": inference.adaptive,
            "axes": stack_axes + "YX", "input_axes": axes, "channel": channel,
            "normalisation": inference.normalisation, "value_range": [value_range[0], value_range[1]],
            "invert": inference.invert, "device": "onnxruntime" if onnx else str(dev),
        }
        run = _Runner(model, dev, torch, should_stop, onnx)
        slices = list(np.ndindex(*stack_shape)) if stack_shape else [()]
        if inference.mode == "tile":
            overlap = int(round(inference.tile_overlap * inference.tile_size))
            grid = TileGrid(height, width, inference.tile_size, overlap)
            settings.update(tile_size=inference.tile_size, tile_overlap=inference.tile_overlap)
            per_batch = _batch_limit(batch_size, grid.tile_shape, dev)
            unit, total = "tiles", len(slices) * len(grid)
        else:
            size = inference.input_size
            settings.update(input_size=size)
            per_batch = _batch_limit(batch_size, (size, size), dev)
            unit, total = "slices", len(slices)
        done = post_done = 0
        next_id = 1
        for first, end in sink.groups():
            probabilities, _ = sink.buffers(first, end)
            group = slices[first:end]
            if inference.mode == "tile":
                work = [(k, s, t) for k, s in enumerate(group) for t in grid]
                for start in range(0, len(work), per_batch):
                    batch = work[start:start + per_batch]
                    inputs = np.stack([to_network_input(pixels[s + t.slices], inference, None, value_range)
                                       for _, s, t in batch])
                    for (k, _, t), p in zip(batch, run(inputs)):
                        grid.accumulate(probabilities[k], t, p)
                    done += len(batch)
                    yield Progress(unit, done, total, f"{done}/{total} tiles")
            else:
                for start in range(0, len(group), per_batch):
                    batch = group[start:start + per_batch]
                    inputs = np.stack([to_network_input(resize_bilinear(pixels[s + _WHOLE], size, size), inference,
                                                        None, value_range) for s in batch])
                    for k, p in zip(range(start, start + len(batch)), run(inputs)):
                        resize_bilinear(p, height, width, out=probabilities[k])
                    done += len(batch)
                    yield Progress(unit, done, total, f"{done}/{total} slices")
            np.clip(probabilities, 0.0, 1.0, out=probabilities)  # blending and resizing may round past [0, 1]

            labels = sink.label_buffer(first, end)
            for _ in postprocess_stack(probabilities, labels, inference.threshold, inference.instances,
                                       inference.min_size, adaptive=inference.adaptive):
                run.check_stop()
                post_done += 1
                yield Progress("postprocess", post_done, len(slices), f"post-processed {post_done}/{len(slices)}")
            if inference.instances:
                next_id = continue_ids(labels, next_id)  # each group is numbered from 1
            sink.commit(first, end, probabilities, labels)
        probabilities, labels = sink.result()
        if stitch_as_configured(store.labels if store is not None else labels, stack_axes, inference):
            settings["stitch_threshold"] = inference.stitch_threshold
        if store is not None:
            store.finish(settings)
            labels = store.labels
            settings["store"] = str(store.path)
        return Prediction(probabilities, labels, settings)
    except BaseException:
        if store is not None:
            store.discard()
        raise
    finally:
        if was_training:  # e.g. a preview during training: hand the model back as it came
            model.train()


def predict(image: Any, model: Any, **kwargs: Any) -> Prediction:
    """Segment ``image`` with ``model`` and return the ``Prediction``.

    Takes the same keyword arguments as ``segment`` (``axes``, ``channel``, ``threshold``,
    ``instances``, ``min_size``, ``stitch_threshold``, ``adaptive``, ``object_size``, ``mode``, ``tile_size``,
    ``tile_overlap``, ``batch_size``,
    ``device``, ``should_stop``, ``workdir``, ``out``, ``keep_probabilities``, ``value_range``)
    and raises the same errors.
    """
    return run_to_end(segment(image, model, **kwargs))


def _allocate(workdir: str | os.PathLike | None, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed output array: in memory, or a memory-mapped ``<workdir>/<name>.npy``."""
    if workdir is None:
        return np.zeros(shape, dtype=dtype)
    folder = os.fspath(workdir)
    if not os.path.isdir(folder):
        raise InputError(f"workdir {folder} is not an existing folder; create it or pass workdir=None")
    path = os.path.join(folder, f"{name}.npy")
    # A new file reads as zeros without being written, so allocation costs no memory and no I/O.
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    # The file is sparse: without reserving its blocks now, a full disk would surface later as a
    # SIGBUS crash on some write into the map instead of this one clear error.
    if hasattr(os, "posix_fallocate"):
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            del array
            os.unlink(path)
            error = OSError(f"not enough free disk space for the {name} ({size / 2**20:.1f} MB) in {folder}: "
                            "free some space or write the results to another disk")
            error.errno = exc.errno
            raise error from None
        finally:
            os.close(fd)
    return array


def _place_model(model: Any, device: Any, torch: Any):
    if device is None:
        param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        return param.device if param is not None else torch.device("cpu")
    from ..network.device import resolve_device

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    model.to(dev)
    return dev


def _batch_limit(batch_size: int, tile_shape: tuple[int, int], dev: Any) -> int:
    if dev.type != "cpu":
        return batch_size
    return max(1, min(batch_size, _CPU_BATCH_PIXELS // max(1, math.prod(tile_shape))))


class _Runner:
    """Runs the network on a numpy batch: N x 3 x H x W float32 in, N x H x W probabilities out."""

    def __init__(self, model: Any, dev: Any, torch: Any, should_stop: Callable[[], bool] | None,
                 onnx: bool = False) -> None:
        self.model, self.dev, self.torch, self.should_stop, self.onnx = model, dev, torch, should_stop, onnx

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("segmentation cancelled")

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        self.check_stop()
        if self.onnx:
            return self.model.probabilities(inputs)
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(inputs).to(self.dev)
            logits = self.model(x)
            return torch.sigmoid(logits[:, 0].float()).cpu().numpy()
