"""Block-wise and distributed segmentation equal a single-process run; killed runs and workers resume."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from napari_litenext.errors import Cancelled
from napari_litenext.inference import distributed
from napari_litenext.inference.postprocess import postprocess
from napari_litenext.inference.predict import predict
from napari_litenext.inference.scale import predict_blocks, predict_many, segment_blocks_of
from napari_litenext.network.registry import load_model
from napari_litenext.progress import run_to_end

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

sys.path.insert(0, os.path.dirname(__file__))
from test_merge import blobs, same_up_to_numbering  # noqa: E402


def _zarr_stack(path, rng, shape=(2, 150, 170)):
    image = rng.integers(100, 400, shape).astype(np.uint16)
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    for z in range(shape[0]):
        for cy, cx in ((64, 64), (70, 100), (128, 40)):  # on block faces at 64 px blocks
            image[z][(yy - cy - 3 * z) ** 2 + (xx - cx) ** 2 < 120] += 3000
    array = zarr.open_array(str(path), mode="w", shape=shape, chunks=(1, 64, 64), dtype=image.dtype)
    array[:] = image
    return array


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            Client(c) as client:
        yield client


def test_blocks_equal_single_process_in_process_and_on_a_cluster(random_checkpoint, tmp_path, rng, cluster):
    array = _zarr_stack(tmp_path / "in.zarr", rng)
    model = load_model(random_checkpoint, device="cpu")
    # A random model's probabilities lie in a narrow band: a threshold inside it makes many objects.
    threshold = float(np.quantile(predict(array, model, batch_size=1).probabilities, 0.7))
    single = predict(array, model, instances=True, batch_size=1, threshold=threshold)
    assert single.labels.max() > 5
    here = predict_blocks(str(tmp_path / "in.zarr"), random_checkpoint, out=tmp_path / "here.zarr", block_size=64,
                          instances=True, batch_size=1, threshold=threshold)
    assert here.settings["blocks"]["blocks"] == 2 * 3 * 3
    assert same_up_to_numbering(single.labels, here.labels[:])
    on_cluster = predict_blocks(str(tmp_path / "in.zarr"), random_checkpoint, out=tmp_path / "cluster.zarr",
                                block_size=64, instances=True, batch_size=1, threshold=threshold, client=cluster)
    assert same_up_to_numbering(single.labels, on_cluster.labels[:])
    assert len(distributed._MODELS) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.zarr", "here.zarr", "in.zarr", "random.pt"]


def test_many_images_one_task_each(random_checkpoint, rng, cluster):
    images = [rng.integers(0, 255, (40 + 8 * i, 48)).astype(np.uint8) for i in range(4)]
    model = load_model(random_checkpoint, device="cpu")
    results = predict_many(images, random_checkpoint, client=cluster)
    for image, result in zip(images, results):
        np.testing.assert_array_equal(result.labels, predict(image, model).labels)


class _Known:
    """Known probabilities instead of the network (pickled by value to worker processes)."""

    def __init__(self, prob: np.ndarray, delay: float = 0.0) -> None:
        self.prob, self.delay = prob, delay

    def __call__(self, block, s):
        time.sleep(self.delay)
        return self.prob[s, block.y0:block.y1, block.x0:block.x1]


def test_killed_run_resumes_without_redoing_finished_blocks(random_checkpoint, tmp_path):
    prob = blobs(np.random.default_rng(1), slices=2, height=96, width=128)
    image = np.zeros(prob.shape, np.uint8)  # the known map replaces the network; the image sets the shape
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3  # checked before each block: three are done

    kwargs = dict(out=tmp_path / "out.zarr", block_size=64, instances=True, threshold=0.55, axes="ZYX",
                  probabilities=_Known(prob))
    with pytest.raises(Cancelled):
        run_to_end(segment_blocks_of(image, random_checkpoint, should_stop=stop_after_three, **kwargs))
    assert not (tmp_path / "out.zarr").exists()  # nothing appears until the run is whole
    result = predict_blocks(image, random_checkpoint, **kwargs)
    assert result.settings["blocks"]["resumed"] == 3
    assert same_up_to_numbering(postprocess(prob, 0.55, True, 0), result.labels[:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "random.pt"]


@pytest.mark.slow
def test_lost_worker_blocks_are_rerun(random_checkpoint, tmp_path):
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    prob = blobs(np.random.default_rng(2), slices=4, height=96, width=128)
    image = np.zeros(prob.shape, np.uint8)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            Client(c) as client:
        outcome = {}

        def run():
            outcome["result"] = predict_blocks(image, random_checkpoint, out=tmp_path / "out.zarr", block_size=64,
                                               axes="ZYX", instances=True, threshold=0.55, client=client,
                                               probabilities=_Known(prob, delay=0.4))

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 60
        while not list(tmp_path.glob(".out.zarr.part-*/work/a-*")) and time.time() < deadline:
            time.sleep(0.05)
        pids = list(client.run(os.getpid).values())
        os.kill(pids[0], signal.SIGKILL)  # a worker dies mid-run; its nanny starts another
        thread.join(120)
        models = client.run(lambda: len(distributed._MODELS))
    assert same_up_to_numbering(postprocess(prob, 0.55, True, 0), outcome["result"].labels[:])
    assert all(n <= 1 for n in models.values())  # each worker loaded the model at most once


def test_real_dsb_image_in_four_blocks_equals_one_run(shared_dir, tmp_path):
    from napari_litenext.io.images import read_image

    from test_merge import split_at_faces

    folder = shared_dir / "data" / "dsb2018" / "images"
    path = next(p for p in sorted(folder.iterdir()) if p.suffix == ".png" and min(read_image(p).shape[:2]) >= 256)
    image = read_image(path)
    model = load_model("nuclei", device="cpu")
    single = predict(image, model, instances=True, batch_size=1).labels
    edge = -(-max(image.shape[:2]) // 2 // 16) * 16  # half the image: 2 x 2 blocks
    blocked = predict_blocks(image, "nuclei", out=tmp_path / "b.zarr", block_size=edge, instances=True,
                             batch_size=1)
    assert blocked.settings["blocks"]["blocks"] == 4 and blocked.settings["blocks"]["joined"] > 0
    labels = blocked.labels[:]
    assert split_at_faces(single, labels) == 0
    assert same_up_to_numbering(single, labels)
