"""predict_files: the batch generator behind the CLI and the Segment widget's folder source."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_litenext.inference.batch import OutputsExist, predict_files
from napari_litenext.progress import run_to_end


@pytest.fixture
def folder(tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in "abc":
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / f"{stem}.png")
    return folder


def _files(folder):
    return sorted(folder.glob("*.png"))


def test_events_and_result(folder, random_checkpoint, tmp_path):
    from napari_litenext.network.registry import load_model

    loads = []
    out = tmp_path / "out"
    events = []
    job = predict_files(_files(folder), out, lambda: loads.append(1) or load_model(random_checkpoint, device="cpu"),
                        options={"threshold": 0.3}, probabilities=True)
    result = run_to_end(job, events.append)
    assert loads == [1]
    assert [p.name for p in result.written] == ["a.png", "b.png", "c.png"] and not result.failed
    finished = [(e.done, e.total, e.outcome) for e in events if e.stage == "images"]
    assert finished == [(1, 3, "written"), (2, 3, "written"), (3, 3, "written")]
    assert {e.file.name for e in events if e.stage == "tiles"} == {"a.png", "b.png", "c.png"}
    assert sorted(os.listdir(out)) == [f"{s}_{k}.tif" for s in "abc" for k in ("labels", "prob")]
    with tifffile.TiffFile(out / "a_labels.tif") as tif:
        assert '"threshold": 0.3' in tif.pages[0].description
    # again: refused before the model is loaded; with skip_existing everything is kept
    with pytest.raises(OutputsExist, match="already exist"):
        run_to_end(predict_files(_files(folder), out, lambda: loads.append(1)))
    kept = run_to_end(predict_files(_files(folder), out, lambda: loads.append(1), skip_existing=True,
                                    probabilities=True))
    assert len(kept.skipped) == 3 and loads == [1, 1]


def test_should_stop_ends_the_batch_between_files(folder, random_checkpoint, tmp_path):
    from napari_litenext.network.registry import load_model

    out = tmp_path / "out"
    model = load_model(random_checkpoint, device="cpu")
    stop = []
    job = predict_files(_files(folder), out, model, should_stop=lambda: bool(stop))
    result = run_to_end(job, lambda e: e.stage == "images" and stop.append(True))
    assert result.cancelled and [p.name for p in result.written] == ["a.png"]
    assert sorted(os.listdir(out)) == ["a_labels.tif"]
