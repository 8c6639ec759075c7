"""One large image or stack segmented in blocks, in this process or on a dask.distributed cluster.

Three passes, each block a task (``client=None`` runs them here, one after the other):

A. each block's probabilities (the whole image's tile grid, see ``blocks``) and provisional
   labels, written into the output store; what it leaves open is pickled to ``work/a-<block>``;
B. on the caller's side, ``merge.plan_merge`` joins objects across block faces (small data:
   face strips, boxes, crops of the joined objects) and pickles the plan;
C. each block's final labels, from its provisional labels and the plan; marker ``work/c-<block>``.

Everything is written block by block under the store's temporary folder, whose name is a hash of
the input and the settings: a killed run started again skips the blocks (and the plan) already
done. A task is a pure function of its block, so dask re-runs the tasks of a lost worker
elsewhere. Each worker process loads the model once (``worker_model``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Cancelled, InputError
from ..progress import Progress
from .blocks import Block, local_postprocess, plan_blocks
from .merge import MergePlan, finish_block, plan_merge

__all__ = ["BlockJob", "segment_blocks", "worker_model", "run_tasks", "DEFAULT_BLOCK_SIZE"]

#: Block edge (pixels) of one huge slice; stacks of smaller slices are split into groups of slices.
DEFAULT_BLOCK_SIZE = 2048
_MODELS: dict[tuple[str, str], Any] = {}


def worker_model(source: Any, device: str | None = None) -> Any:
    """The model from ``source`` (bundled name or checkpoint path), loaded once per process.

    A model object (a run in this process) is returned as it is.

    Dask workers keep their process between tasks, so every block or file a worker segments
    after the first reuses the model; torch is limited to the worker's threads so that workers
    sharing a machine do not compete for its cores.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    key = (str(source), str(device))
    model = _MODELS.get(key)
    if model is None:
        from ..network.registry import load_model

        _limit_threads()
        model = _MODELS[key] = load_model(source, device=device)
    return model


def _limit_threads() -> None:
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return  # not in a dask worker: leave torch as it is
    import torch

    torch.set_num_threads(max(1, int(threads)))


@dataclass
class BlockJob:
    """What a block task needs (pickled to the workers).

    Attributes:
        source: the image: a zarr path (opened by each worker) or an array (a numpy array or
            anything picklable, e.g. for a threads-only cluster).
        order, channel_key: how ``lazy.Arranged`` views it (stack axes, Y, X, [C]).
        model: bundled model name or checkpoint path (or a model object, for a run in this
            process); device: torch device for the workers.
        inference: the resolved ``InferenceConfig``; value_range: the whole image's.
        stack_shape, height, width: the output's geometry; blocks: the plan.
        store: the output store's temporary folder (``0``, ``probabilities``, ``provisional``, ``work``).
        batch_size: tiles per network call.
        probabilities: a callable ``(block, flat slice) -> H x W`` used instead of the network
            (tests of the merging on known maps); None runs the model.
    """

    source: Any
    order: list[int]
    channel_key: Any
    model: Any
    device: str | None
    inference: Any
    value_range: tuple[float, float]
    stack_shape: tuple[int, ...]
    height: int
    width: int
    blocks: list[Block]
    store: str
    batch_size: int = 8
    keep_probabilities: bool = False
    probabilities: Callable[[Block, int], np.ndarray] | None = field(default=None, repr=False)

    def stack_index(self, flat: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(flat, self.stack_shape)) if self.stack_shape else ()


def _open(path: str, name: str) -> Any:
    import zarr

    return zarr.open_array(os.path.join(path, name), mode="r+")


def _source(job: BlockJob) -> Any:
    from .lazy import Arranged

    source = job.source
    if isinstance(source, (str, os.PathLike)):
        from ..io.ngff import read_zarr

        source = read_zarr(source).array
    return Arranged(source, job.order, job.channel_key)


def _atomic_pickle(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def block_task(job: BlockJob, block: Block) -> int:
    """Pass A for one block: probabilities, provisional labels, what is left open."""
    work = Path(job.store) / "work"
    marker = work / f"a-{block.name}"
    if marker.exists():  # done by an earlier attempt (a lost worker's task run again, a resumed run)
        return block.index
    provisional = _open(job.store, "provisional")
    probabilities_out = _open(job.store, "probabilities") if job.keep_probabilities else None
    inference = job.inference
    probs_of = job.probabilities or _network_probabilities(job)
    infos = {}
    for s in range(block.first, block.end):
        prob = probs_of(block, s)
        index = job.stack_index(s)
        region = index + (slice(block.y0, block.y1), slice(block.x0, block.x1))
        if probabilities_out is not None:
            probabilities_out[region] = prob
        labels, info = local_postprocess(prob, block, job.height, job.width, inference.threshold,
                                         inference.instances, inference.min_size)
        provisional[region] = labels
        infos[s] = info
    _atomic_pickle(marker, infos)
    return block.index


def _network_probabilities(job: BlockJob) -> Callable[[Block, int], np.ndarray]:
    import torch

    from .blocks import block_probabilities
    from .predict import _batch_limit, _Runner
    from .preprocess import to_network_input
    from .resize import resize_bilinear
    from .tiling import TileGrid

    model = worker_model(job.model, job.device)
    dev = next(model.parameters()).device
    run = _Runner(model, dev, torch, None)
    view = _source(job)
    inference = job.inference

    def to_input(pixels: np.ndarray) -> np.ndarray:
        return to_network_input(pixels, inference, None, job.value_range)

    if inference.mode == "tile":
        overlap = int(round(inference.tile_overlap * inference.tile_size))
        grid = TileGrid(job.height, job.width, inference.tile_size, overlap)
        per_batch = _batch_limit(job.batch_size, grid.tile_shape, dev)
        return lambda block, s: block_probabilities(view.read, job.stack_index(s), block, grid, to_input, run,
                                                    per_batch)
    size = inference.input_size

    def resized(block: Block, s: int) -> np.ndarray:
        pixels = view.read(job.stack_index(s) + (slice(None), slice(None)))
        p = run(to_input(resize_bilinear(pixels, size, size))[None])[0]
        return np.clip(resize_bilinear(p, job.height, job.width), 0.0, 1.0)

    return resized


def finish_task(job: BlockJob, block: Block) -> int:
    """Pass C for one block: final labels into level 0 of the store."""
    work = Path(job.store) / "work"
    marker = work / f"c-{block.name}"
    if marker.exists():
        return block.index
    with open(work / "plan", "rb") as f:
        plan: MergePlan = pickle.load(f)
    with open(work / f"a-{block.name}", "rb") as f:
        infos = pickle.load(f)
    provisional, labels = _open(job.store, "provisional"), _open(job.store, "0")
    for s in range(block.first, block.end):
        region = job.stack_index(s) + (slice(block.y0, block.y1), slice(block.x0, block.x1))
        labels[region] = finish_block(provisional[region], block, s, infos[s], plan, labels.dtype)
    marker.touch()
    return block.index


def run_tasks(client: Any, fn: Callable[[Any], Any], items: list[Any], stage: str,
              should_stop: Callable[[], bool] | None = None) -> Generator[Progress, None, list[Any]]:
    """Run ``fn`` on every item, here (``client=None``) or as dask tasks; yields progress, returns results.

    On a cluster, dask re-runs the tasks of a worker that is lost; an exception in a task is
    raised here once every other task has been cancelled.
    """
    results = []
    if client is None:
        for done, item in enumerate(items, start=1):
            if should_stop is not None and should_stop():
                raise Cancelled("segmentation cancelled")
            results.append(fn(item))
            yield Progress(stage, done, len(items), f"{done}/{len(items)} {stage}")
        return results
    from distributed import as_completed

    futures = client.map(fn, items, pure=False)
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            results.append(future.result())
            if should_stop is not None and should_stop():
                raise Cancelled("segmentation cancelled")
            yield Progress(stage, done, len(items), f"{done}/{len(items)} {stage}")
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results


def run_key(*parts: Any) -> str:
    """A short hash naming a run (input, settings, model), so an interrupted run can be resumed."""
    text = json.dumps([str(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def segment_blocks(job: BlockJob, client: Any = None,
                   should_stop: Callable[[], bool] | None = None) -> Generator[Progress, None, dict[str, int]]:
    """Passes A, B and C over ``job.blocks`` into ``job.store`` (created by the caller); see the module docstring.

    Returns:
        counts: ``blocks``, ``resumed`` (blocks of pass A found done), ``objects`` (instances),
        ``joined`` (objects made of parts of several blocks).
    """
    import functools

    import zarr

    work = Path(job.store) / "work"
    work.mkdir(parents=True, exist_ok=True)
    shape = job.stack_shape + (job.height, job.width)
    if not (Path(job.store) / "provisional").exists():
        chunks = (1,) * len(job.stack_shape) + (min(job.height, _block_edge(job.blocks, "y")),
                                                min(job.width, _block_edge(job.blocks, "x")))
        zarr.open_group(job.store, mode="r+").create_array("provisional", shape=shape, chunks=chunks,
                                                            dtype="int32", fill_value=0)
    resumed = sum((work / f"a-{b.name}").exists() for b in job.blocks)
    todo = [b for b in job.blocks if not (work / f"a-{b.name}").exists()]
    yield from run_tasks(client, functools.partial(block_task, job), todo, "blocks", should_stop)

    infos = {}
    for b in job.blocks:
        with open(work / f"a-{b.name}", "rb") as f:
            for s, info in pickle.load(f).items():
                infos[(b.index, s)] = info
    plan_path = work / "plan"
    if plan_path.exists():
        with open(plan_path, "rb") as f:
            plan = pickle.load(f)
    else:
        provisional = _open(job.store, "provisional")

        def read(block: Block, s: int, part: tuple[slice, slice]) -> np.ndarray:
            ys = slice(block.y0 + part[0].start, block.y0 + part[0].stop)
            xs = slice(block.x0 + part[1].start, block.x0 + part[1].stop)
            return provisional[job.stack_index(s) + (ys, xs)]

        plan = plan_merge(job.blocks, infos, job.height, job.width, job.inference.instances,
                          job.inference.min_size, read)
        _atomic_pickle(plan_path, plan)
    yield Progress("merge", 1, 1, f"{plan.joined} objects joined across block faces")
    todo = [b for b in job.blocks if not (work / f"c-{b.name}").exists()]
    yield from run_tasks(client, functools.partial(finish_task, job), todo, "labels", should_stop)
    shutil.rmtree(work)
    shutil.rmtree(Path(job.store) / "provisional")
    return {"blocks": len(job.blocks), "resumed": resumed, "objects": plan.objects, "joined": plan.joined}


def _block_edge(blocks: list[Block], axis: str) -> int:
    b = blocks[0]
    return (b.y1 - b.y0) if axis == "y" else (b.x1 - b.x0)


def check_block_size(block_size: int) -> int:
    """``block_size`` if usable (a multiple of 16, at least 64)."""
    if not isinstance(block_size, int) or block_size < 64 or block_size % 16:
        raise InputError(f"block size must be a multiple of 16 and at least 64, got {block_size!r}")
    return block_size


def plan_for(stack_shape: tuple[int, ...], height: int, width: int, block_size: int, mode: str) -> list[Block]:
    """The blocks of an image: ``block_size`` squares in tile mode, whole slices in resize mode."""
    count = int(np.prod(stack_shape)) if stack_shape else 1
    return plan_blocks(count, height, width, check_block_size(block_size), whole_slices=mode == "resize")

