"""``train`` and ``evaluate`` under bad files, full disks, library warnings and kill -9.

Each test reproduces a failure of the code before the fix (ad991c6): one bad pair stopped the
whole run with a message that did not name the file (or a traceback); ``evaluate`` scored NaN
and fractional masks that ``train`` refused; tifffile's warnings went to stderr in its own words; a
hint named ``axes=``, which ``train`` does not have; a full disk ended training in a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_litenext.cli import main
from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig
from napari_litenext.network.checkpoint import load_checkpoint, save_checkpoint
from napari_litenext.network.model import LiteNeXt

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "napari-litenext"
TINY = ["--epochs", "1", "--batch-size", "2", "--patch-size", "32", "--mode", "tile", "--no-srp", "--device", "cpu"]


def _bad_mask(folders, name="c3", values=np.nan):
    """Replace a pair's mask by a float TIFF holding ``values`` in one corner (NaN, 0.5, ...)."""
    (folders / "ma" / f"{name}_mask.png").unlink()
    mask = np.zeros((48, 48), np.float32)
    mask[:4, :4] = values
    path = folders / "ma" / f"{name}_mask.tif"
    tifffile.imwrite(path, mask)
    return path


def _broken_image(folders, name="c2"):
    path = folders / "im" / f"{name}.png"
    path.write_bytes(path.read_bytes()[:60])  # a truncated PNG
    return path


def _train(folders, *extra):
    return main(["train", "--images", str(folders / "im"), "--masks", str(folders / "ma"), "--output",
                 str(folders / "run"), *TINY, *extra])


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("napari-litenext: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- train: bad pairs

def test_train_names_every_bad_file_and_offers_skip_bad(folders, capsys):
    mask = _bad_mask(folders)
    image = _broken_image(folders)
    assert _train(folders) == 2
    line = _error_line(capsys)
    assert "2 unusable pair(s)" in line and str(mask) in line and str(image) in line
    assert "fractional or NaN" in line and "--skip-bad" in line
    assert not (folders / "run").exists()


def test_train_skip_bad_trains_on_the_rest_and_lists_them_at_the_end(folders, capsys):
    mask = _bad_mask(folders)
    image = _broken_image(folders)
    assert _train(folders, "--skip-bad", "--val-fraction", "0.5") == 0
    captured = capsys.readouterr()
    assert "leaving out 2 unusable pair(s)" in captured.err
    summary = captured.out[captured.out.index("left out 2 unusable pair(s):"):]
    assert str(mask) in summary and str(image) in summary and "fractional or NaN" in summary
    assert (folders / "run" / "best.pt").exists()
    assert "1 training, 1 validation" in captured.err


def test_train_skip_bad_with_nothing_usable_is_one_line(folders, capsys):
    for i in range(4):
        _bad_mask(folders, f"c{i}", 0.5)
    assert _train(folders, "--skip-bad") == 2
    assert "no usable pairs: all 4 were left out" in _error_line(capsys)


def test_a_stack_in_train_names_the_file_and_no_missing_option(folders, capsys):
    stack = folders / "im" / "c1.tif"
    (folders / "im" / "c1.png").unlink()
    tifffile.imwrite(stack, np.zeros((2, 48, 48, 3), np.uint8))
    assert _train(folders) == 2
    line = _error_line(capsys)
    assert str(stack) in line and "axes" not in line and "each 2D plane" in line


def test_train_help_has_no_doubled_percent(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "10 percent" in text and "%%" not in text and "--skip-bad" in text


# ---------------------------------------------------------------- train: full disk

def test_train_full_disk_is_one_line_that_says_resume_and_resume_finishes(folders, capsys, monkeypatch):
    import napari_litenext.network.checkpoint as checkpoint_module

    original = checkpoint_module.torch.save
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # epoch 1's last.pt is written, its best.pt meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    assert _train(folders) == 2
    line = _error_line(capsys)
    assert "best.pt after epoch 1: the disk is full" in line and "--resume" in line
    monkeypatch.undo()
    assert _train(folders, "--resume") == 0
    assert load_checkpoint(folders / "run" / "best.pt").extra["epoch"] == 1
    assert "best.pt of epoch 1 had not been saved" in capsys.readouterr().err


# ---------------------------------------------------------------- evaluate: the same checks as train

@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, LiteNeXt(ModelConfig(base_width=4, fusion_dim=8)),
                    InferenceConfig(mode="resize", input_size=32), ModelCard(name="tiny"))
    return path


def _evaluate(folders, model, *extra):
    return main(["evaluate", "--model", str(model), "--images", str(folders / "im"), "--masks",
                 str(folders / "ma"), "--device", "cpu", *extra])


@pytest.mark.parametrize("values, needle", [(np.nan, "fractional or NaN"), (0.5, "fractional or NaN"),
                                            (-1.0, "negative values")])
def test_evaluate_refuses_masks_train_refuses_with_the_same_words(folders, tiny_model, capsys, values, needle):
    mask = _bad_mask(folders, values=values)
    assert _evaluate(folders, tiny_model) == 2
    evaluate_line = _error_line(capsys)
    assert str(mask) in evaluate_line and needle in evaluate_line and "--skip-bad" in evaluate_line
    assert _train(folders) == 2
    train_line = _error_line(capsys)
    reason = evaluate_line.split(str(mask) + ": ", 1)[1].split(";")[0]
    assert f"{mask}: {reason}" in train_line


def test_evaluate_skip_bad_scores_the_rest_and_lists_what_it_left_out(folders, tiny_model, capsys, tmp_path):
    mask = _bad_mask(folders)
    image = _broken_image(folders)
    scores = tmp_path / "scores.json"
    assert _evaluate(folders, tiny_model, "--skip-bad", "--json", str(scores)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "2 images scored (native protocol), 2 unusable pairs left out"
    left_out = [line for line in out.splitlines() if line.startswith("left out: ")]
    assert len(left_out) == 2 and any(str(mask) in line for line in left_out)
    assert any(str(image) in line for line in left_out)
    data = json.loads(scores.read_text())
    assert data["n_images"] == 2 and data["n_unusable"] == 2
    assert {u["file"] for u in data["unusable"]} == {str(mask), str(image)}


def test_evaluate_names_an_image_predict_cannot_use(folders, tiny_model, capsys):
    image = folders / "im" / "c1.tif"
    (folders / "im" / "c1.png").unlink()
    pixels = np.ones((48, 48), np.float32)
    pixels[5, 5] = np.nan
    tifffile.imwrite(image, pixels)
    assert _evaluate(folders, tiny_model) == 2
    line = _error_line(capsys)
    assert str(image) in line and "NaN" in line


def test_evaluate_api_skip_bad(folders, tiny_model):
    from napari_litenext.inference.evaluate import evaluate

    _bad_mask(folders)
    result = evaluate(str(tiny_model), folders / "im", folders / "ma", device="cpu", skip_bad=True)
    assert len(result.rows) == 3 and [u["name"] for u in result.unusable] == ["c3"]


# ---------------------------------------------------------------- library warnings

def test_tifffile_warnings_are_shown_once_in_our_words(folders, tiny_model, capsys):
    for i in (0, 1):
        (folders / "im" / f"c{i}.png").unlink()
        # metadata claiming another shape than the pixels: tifffile logs a warning on every read
        tifffile.imwrite(folders / "im" / f"c{i}.tif", np.full((48, 48), 20, np.uint8),
                         description='{"shape": [3, 48, 49]}')
    assert _evaluate(folders, tiny_model) == 0
    err = capsys.readouterr().err
    assert "tifffile" not in err and "shaped series" not in err
    ours = [line for line in err.splitlines() if line.startswith("napari-litenext: warning:")]
    assert len(ours) == 2 and "metadata does not describe the pixels" in ours[0] and "c0.tif" in ours[0]
    assert "files in all" in ours[1]


# ---------------------------------------------------------------- kill -9 of the real command

def _fingerprint(folder):
    best, last = load_checkpoint(folder / "best.pt"), load_checkpoint(folder / "last.pt")
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in last.extra["history"]]
    return best.sha256, best.extra["epoch"], last.sha256, history


def _command(folders, out, *extra):
    return [str(CLI), "train", "--images", str(folders / "im"), "--masks", str(folders / "ma"), "--output",
            str(out), "--epochs", "3", "--batch-size", "2", "--patch-size", "32", "--mode", "tile", "--no-srp",
            "--device", "cpu", *extra]


def _run(cmd, env):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _kill_at(cmd, env, out, nth_temp, delay):
    """Run ``cmd`` and kill -9 it ``delay`` s after the ``nth_temp``-th temporary file appears in ``out``
    (a checkpoint or history write in progress), or ``delay`` s after the start when ``nth_temp`` is 0."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[str] = set()
    while process.poll() is None and len(seen) < nth_temp:
        if out.is_dir():
            seen.update(name for name in os.listdir(out) if name.endswith(".part"))
        time.sleep(0.002)
    time.sleep(delay)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(folders):
    # Kills land during a write (the n-th temporary file of the run), just after one, or at a
    # random moment; resuming must end with the files of the uninterrupted run, bit for bit.
    if not CLI.exists():
        pytest.skip(f"{CLI} not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    _run(_command(folders, folders / "reference"), env)
    duration = time.perf_counter() - started
    expected = _fingerprint(folders / "reference")
    chooser = random.Random(12)
    points = [(chooser.randint(1, 6), chooser.uniform(0.0, 0.05)) for _ in range(3)] + [(0, 0.6 * duration)]
    for trial, (nth_temp, delay) in enumerate(points):
        out = folders / f"killed{trial}"
        _kill_at(_command(folders, out), env, out, nth_temp, delay)
        for name in ("best.pt", "last.pt"):
            if (out / name).exists():
                load_checkpoint(out / name)  # whole, never truncated
        resumable = (out / "last.pt").exists() or (out / "best.pt").exists()
        _run(_command(folders, out, *(["--resume"] if resumable else [])), env)
        assert _fingerprint(out) == expected, f"killed at temporary file {nth_temp} + {delay:.3f} s"
        assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
