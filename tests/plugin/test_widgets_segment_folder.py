"""The Segment widget's folder source: the CLI's batch, run from the widget (pytest-qt under Xvfb)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from _widgets_support import errors_since, isolated_widget_state, notifications, open_widget, \
    skip_without_display, wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui


def _images(folder: Path, rng, names=("a", "b", "c"), size=64) -> Path:
    folder.mkdir()
    for name in names:
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def _folder_widget(viewer, qtbot, checkpoint, inputs: Path, out: Path):
    widget = open_widget(viewer, "Segment")
    widget.select_model(checkpoint)
    qtbot.waitUntil(lambda: widget.model_values.source is not None and not widget.model_values.loading,
                    timeout=60_000)
    widget.folder.source.value = "folder"
    widget.folder.input_folder.value = inputs
    widget.folder.output_folder.value = out
    return widget


def _settings(path: Path) -> dict:
    """The settings a predict output carries, less its output set (an id per run)."""
    if path.suffix == ".png":
        with Image.open(path) as img:
            meta = json.loads(img.text["napari-litenext"])
    else:
        with tifffile.TiffFile(path) as tif:
            meta = json.loads(tif.pages[0].description)
    meta.pop("output_set")
    return meta


def _sets_whole(out: Path, suffixes=("_labels.tif",)) -> list[str]:
    """The stems written; each has all its files and nothing hidden is left."""
    names = os.listdir(out) if out.is_dir() else []
    assert [n for n in names if n.startswith(".")] == [], "temporary files or work folders left"
    stems = sorted({n[:-len(s)] for n in names for s in suffixes if n.endswith(s)})
    for stem in stems:
        assert all((out / f"{stem}{s}").exists() for s in suffixes), f"{stem}: partial output set"
    return stems


def test_folder_batch_writes_the_files_the_cli_writes(viewer, qtbot, random_checkpoint, tmp_path, rng):
    from napari_litenext.cli import main

    inputs = _images(tmp_path / "in", rng)
    cli_out, widget_out = tmp_path / "cli", tmp_path / "widget"
    widget = _folder_widget(viewer, qtbot, random_checkpoint, inputs, widget_out)
    widget.settings.threshold.value = 0.3  # a changed setting reaches the batch; the rest stay the model's
    widget.folder.probabilities.value = True
    widget.folder.overlay.value = True
    before = len(notifications())
    widget.run()
    wait_idle(qtbot, widget)
    assert errors_since(before) == []
    assert widget.status.value.startswith(f"3 written, 0 skipped, 0 failed into {widget_out}")
    model = widget.settings.model_file.value
    assert main(["predict", str(inputs), "-o", str(cli_out), "--model", str(model), "-q", "--probabilities",
                 "--overlay", "--threshold", "0.3"]) == 0

    names = sorted(os.listdir(cli_out))
    assert names == sorted(os.listdir(widget_out)) == [f"{s}{k}" for s in "abc"
                                                       for k in ("_labels.tif", "_overlay.png", "_prob.tif")]
    for name in names:
        assert _settings(widget_out / name) == _settings(cli_out / name), name
        if name.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(widget_out / name), tifffile.imread(cli_out / name))
    assert _settings(widget_out / "a_labels.tif")["threshold"] == pytest.approx(0.3)
    assert _settings(widget_out / "a_labels.tif")["min_size"] == _settings(cli_out / "a_labels.tif")["min_size"]


def test_cancel_leaves_no_partial_output_set(viewer, qtbot, random_checkpoint, tmp_path, rng):
    inputs = _images(tmp_path / "in", rng, names=("a", "b", "c", "d"), size=512)  # 64 tiles each: 8 batches
    out = tmp_path / "out"
    widget = _folder_widget(viewer, qtbot, random_checkpoint, inputs, out)
    widget.folder.probabilities.value = True
    widget.settings.device.value = "cpu"
    widget.run()
    seen = []

    def cancel_in_the_first_image(event):
        seen.append(event.stage)
        if event.stage == "tiles" and event.index == 1:
            widget.cancel()

    widget.worker.yielded.connect(cancel_in_the_first_image)
    wait_idle(qtbot, widget)
    result = widget.folder.result
    assert "tiles" in seen and result.cancelled
    assert len(result.written) < 4 and result.failed == []
    assert _sets_whole(out, ("_labels.tif", "_prob.tif")) == sorted(p.stem for p in result.written)
    assert widget.status.value.startswith("cancelled: ")
    # a second run keeping complete outputs finishes the batch
    widget.folder.existing.value = "keep complete"
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.folder.result.written and not widget.folder.result.cancelled
    assert _sets_whole(out, ("_labels.tif", "_prob.tif")) == ["a", "b", "c", "d"]


def test_a_bad_file_is_reported_and_the_others_are_written(viewer, qtbot, random_checkpoint, tmp_path, rng):
    inputs = _images(tmp_path / "in", rng, names=("a", "c"))
    (inputs / "b.tif").write_bytes(b"not a TIFF file at all")
    out = tmp_path / "out"
    widget = _folder_widget(viewer, qtbot, random_checkpoint, inputs, out)
    before = len(notifications())
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.status.value.startswith(f"2 written, 0 skipped, 1 failed into {out}")
    assert str(inputs / "b.tif") in widget.last_error
    assert any("b.tif" in m for m in errors_since(before))
    assert sorted(os.listdir(out)) == ["a_labels.tif", "c_labels.tif"]


def test_existing_outputs_are_refused_before_any_work(viewer, qtbot, random_checkpoint, tmp_path, rng):
    inputs = _images(tmp_path / "in", rng, names=("a",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.tif").write_bytes(b"a user's file")
    widget = _folder_widget(viewer, qtbot, random_checkpoint, inputs, out)
    widget.run()
    wait_idle(qtbot, widget)
    assert "already exist" in widget.last_error and "a_labels.tif" in widget.last_error
    assert (out / "a_labels.tif").read_bytes() == b"a user's file"
