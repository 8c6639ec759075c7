"""The scaling API: one image in blocks into a zarr store, many images as one task each, on a dask cluster.

    from distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    result = nl.predict_blocks("stack.zarr", "nuclei", out="stack_labels.zarr", client=client)
    results = nl.predict_many(["a.tif", "b.tif"], "nuclei", client=client)

Without a client the same work runs in this process. See ``inference.distributed`` for how the
blocks are made exact and resumable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

from .stitch import stitch_as_configured
from ..progress import Progress, run_to_end
from .distributed import DEFAULT_BLOCK_SIZE, BlockJob, plan_for, run_key, run_tasks, segment_blocks, worker_model
from .layout import arrange
from .object_size import check_object_size, object_size_not_applied
from .predict import Prediction

__all__ = ["segment_blocks_of", "predict_blocks", "predict_many", "DEFAULT_BLOCK_SIZE"]


def segment_blocks_of(image: Any, model: Any, *, out: Any, client: Any = None,
                      block_size: int = DEFAULT_BLOCK_SIZE, axes: str | None = None, channel: int | None = None,
                      threshold: float | None = None, instances: bool | None = None, min_size: int | None = None,
                      stitch_threshold: float | None = None, adaptive: bool | None = None,
                      object_size: float | str | None = None, mode: str | None = None, tile_size: int | None = None,
                      tile_overlap: float | None = None, batch_size: int = 8, device: str | None = None, keep_probabilities: bool = False,
                      should_stop: Callable[[], bool] | None = None,
                      probabilities: Callable[[Any, int], Any] | None = None,
                      value_range: tuple[float, float] | None = None) -> Generator[Progress, None, Prediction]:
    """Segment one image block by block into a zarr store, yielding progress; returns the ``Prediction``.

    Args:
        image: a zarr path (each worker opens it; a plain array or an OME-Zarr image) or an array
            (numpy, zarr, dask; sent to the workers, so keep it small or use threads).
        model: bundled model name or checkpoint path (each worker loads it once), or a loaded
            model (used as it is in this process; pickled to workers).
        out: a path for a new standalone labels store, or an ``io.ngff.LabelStore``.
        client: a ``distributed.Client``; None runs the blocks in this process.
        block_size: edge of the Y/X blocks in tile mode (a multiple of 16, at least 64); slices
            smaller than that are grouped, and resize mode always uses whole slices.
        axes, channel, threshold, instances, min_size, stitch_threshold, mode, tile_size,
            tile_overlap, batch_size, device: as ``segment`` (None: the model's setting).
        adaptive, object_size: as ``segment``, but neither is applied here: blocks are
            post-processed one by one, at native scale. ``settings["adaptive"]`` is
            ``"not applied in block mode"`` when it was asked for (False otherwise), and
            ``settings["object_size"]`` says the same when an object size was.
        keep_probabilities: also write the float32 map into the store.
        should_stop: checked after each block; True raises ``Cancelled`` (the run can be resumed).
        probabilities: ``(block, flat slice) -> probabilities`` replacing the network (tests).
        value_range: the intensity range when known; None computes it (bounded reads).

    Returns:
        ``Prediction`` whose ``labels`` is the store's zarr array; ``settings`` holds the model
        settings and ``blocks``: counts (blocks, resumed, objects, joined).

    Raises:
        InputError, SettingsError: as ``segment``; also a number passed as ``object_size``, which
            block mode cannot apply (``"auto"`` or the model's value is only recorded).
            FileExistsError: ``out`` exists.
        Cancelled: ``should_stop()``; what was done is kept, and the same call resumes it.
    """
    from ..io.ngff import LabelStore, read_zarr
    from ..network.registry import load_model

    source = image
    scale: dict[str, float] = {}
    units: dict[str, str] = {}
    if isinstance(image, (str, os.PathLike)):
        zarr_image = read_zarr(image)
        image, axes = zarr_image.array, axes or zarr_image.axes
        scale, units = zarr_image.scale, zarr_image.units
        source = os.fspath(zarr_image.path)  # each worker opens it: pixels never travel
    local = load_model(model, device="cpu") if isinstance(model, (str, os.PathLike)) else model
    inference = local.inference.with_overrides(threshold=threshold, instances=instances, min_size=min_size,
                                               stitch_threshold=stitch_threshold, adaptive=adaptive,
                                               object_size=object_size, mode=mode, tile_size=tile_size,
                                               tile_overlap=tile_overlap)
    not_applied = {"adaptive": "not applied in block mode" if inference.adaptive else False}
    if inference.object_size:
        check_object_size(local, inference)
        not_applied["object_size"] = object_size_not_applied(
            object_size, "in block mode", "use object size 0 (off), or segment the image whole (no cluster)")
    layout = arrange(image, axes, channel)
    if value_range is None:
        yield Progress("statistics", 0, 1, "intensity range")
        value_range = layout.intensity_range(inference)
    label_dtype = "int32" if inference.instances else "uint8"
    shape = layout.stack_shape + (layout.height, layout.width)
    blocks = plan_for(layout.stack_shape, layout.height, layout.width, block_size, inference.mode)
    store = out if isinstance(out, LabelStore) else LabelStore(out, name=os.path.basename(os.fspath(out)),
                                                                scale=scale, units=units)
    key = run_key(_identity(source), shape, layout.axes, channel, local.sha256, inference.to_dict(),
                  block_size, batch_size, keep_probabilities, value_range)
    first = blocks[0]
    chunks = (1,) * len(layout.stack_shape) + (first.y1 - first.y0, first.x1 - first.x0)
    store.create(shape, label_dtype, layout.stack_axes + "YX", chunks=chunks, probabilities=keep_probabilities,
                 resume_key=key)
    source_of_model = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    job = BlockJob(source=source, order=layout.order, channel_key=layout.channel_key, model=source_of_model,
                   device=device, inference=inference,
                   value_range=value_range, stack_shape=layout.stack_shape, height=layout.height,
                   width=layout.width, blocks=blocks, store=str(store.work_path), batch_size=batch_size,
                   keep_probabilities=keep_probabilities, probabilities=probabilities)
    counts = yield from segment_blocks(job, client, should_stop)
    settings = {
        "model": local.card.name, "sha256": local.sha256, "mode": inference.mode, "threshold": inference.threshold,
        "instances": inference.instances, "min_size": inference.min_size, "axes": layout.stack_axes + "YX",
        "input_axes": layout.axes, "channel": channel, "normalisation": inference.normalisation,
        "value_range": list(value_range), "invert": inference.invert, "blocks": counts, **not_applied,
        "device": str(device or next(local.parameters()).device),
    }
    if inference.mode == "tile":
        settings.update(tile_size=inference.tile_size, tile_overlap=inference.tile_overlap)
    # after the blocks are merged: linking through Z needs each slice's final ids
    if stitch_as_configured(store.labels, layout.stack_axes, inference):
        settings["stitch_threshold"] = inference.stitch_threshold
    store.finish(settings)
    settings["store"] = str(store.path)
    return Prediction(store.probabilities, store.labels, settings)


def _identity(source: Any) -> str:
    """What names the input in the run's key: its path, its dask name, or a hash of its pixels."""
    import hashlib

    import numpy as np

    if isinstance(source, str):
        return source
    if isinstance(source, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(source).view(np.uint8).reshape(-1)).hexdigest()
    name = getattr(source, "name", None)  # a dask array's name is a hash of its graph
    store = getattr(source, "store", None)
    return f"{type(source).__name__}:{store}:{name}" if (store or name) else f"object:{id(source)}"


def predict_blocks(image: Any, model: str | os.PathLike, **kwargs: Any) -> Prediction:
    """``segment_blocks_of`` run to its end (same arguments)."""
    return run_to_end(segment_blocks_of(image, model, **kwargs))


def _predict_one(model: str, device: str | None, settings: dict[str, Any], image: Any) -> Prediction:
    from .predict import predict

    if isinstance(image, (str, os.PathLike)):
        from ..io.images import read_image_with_axes

        image, file_axes = read_image_with_axes(image)
        settings = dict(settings, axes=settings.get("axes") or file_axes)
    return predict(image, worker_model(model, device), **settings)


def predict_many(images: list[Any], model: str | os.PathLike, *, client: Any = None, device: str | None = None,
                 **settings: Any) -> list[Prediction]:
    """Segment many images, one task each, in this process or on a dask cluster.

    Args:
        images: image files (read by the workers) or arrays.
        model: bundled model name or checkpoint path; each worker loads it once.
        client: a ``distributed.Client``; None runs here.
        settings: keyword arguments of ``predict`` (``axes``, ``instances``, ...).

    Returns:
        The predictions, in the order of ``images``.

    Raises:
        What ``predict`` or ``read_image`` raise for the first image that fails.
    """
    import functools

    task = functools.partial(_predict_one, os.fspath(model), device, settings)
    results = run_to_end(run_tasks(client, _Indexed(task), list(enumerate(images)), "images"))
    return [p for _, p in sorted(results, key=lambda r: r[0])]


class _Indexed:
    """``fn`` applied to the item of an (index, item) pair, keeping the index (results arrive in any order)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, pair: tuple[int, Any]) -> tuple[int, Any]:
        return pair[0], self.fn(pair[1])
