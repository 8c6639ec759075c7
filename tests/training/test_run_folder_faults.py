"""The run folder under full disks and interrupted writes: one clear error, and a folder that resumes.

Each test would fail on the code before the fix (ad991c6): a full disk raised torch's or the
OS's own error, last.pt was written after best.pt, and a folder without last.pt could not be
resumed at all.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

import napari_litenext.network.checkpoint as checkpoint_module
import napari_litenext.training.run_folder as run_folder
from napari_litenext.config import ModelConfig
from napari_litenext.errors import LiteNeXtError, TrainingError
from napari_litenext.network.checkpoint import load_checkpoint
from napari_litenext.progress import run_to_end
from napari_litenext.training.config import LossConfig, TrainConfig
from napari_litenext.training.data import samples_from_arrays
from napari_litenext.training.loop import train
from napari_litenext.training.run_folder import write_failure

SMALL = ModelConfig(base_width=4, fusion_dim=8)
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def _discs(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.integers(12, 36, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 49
        images.append((mask * 180 + rng.integers(0, 60, mask.shape)).astype(np.uint8))
        masks.append(mask)
    return samples_from_arrays(images, masks)


def _cfg(out, **kw):
    base = dict(epochs=3, batch_size=2, patch_size=32, mode="tile", loss=LossConfig(srp=False), lr=3e-3,
                device="cpu", model=SMALL, output_dir=str(out), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _train(out, on_event=None, **kw):
    events = []

    def record(event):
        events.append(event)
        if on_event is not None:
            on_event(event)

    result = run_to_end(train(_discs(4), _discs(2, seed=1), _cfg(out, **kw)), record)
    return events, result


def _fingerprint(folder):
    """What an uninterrupted run and a resumed one must agree on, bit for bit."""
    best, last = load_checkpoint(folder / "best.pt"), load_checkpoint(folder / "last.pt")
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in last.extra["history"]]
    return (best.sha256, best.extra["epoch"], last.sha256, history, last.extra["best_epoch"],
            {k: v.tolist() for k, v in last.extra["optimiser"]["state"][0].items()})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted three-epoch run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    _train(out)
    return _fingerprint(out)


def _fail_on_write(monkeypatch, name, error, free=None):
    """The next torch.save onto ``name`` raises ``error`` (once); ``free`` fakes the free space then."""
    original = checkpoint_module.torch.save
    state = {"armed": True}

    def save(obj, path, *args, **kwargs):
        if state["armed"] and os.path.basename(str(path)).startswith(f".{name}."):
            state["armed"] = False
            with open(path, "wb") as handle:  # a part-written temporary file, as a full disk leaves
                handle.write(b"PK\x03\x04partial")
            raise error
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    if free is not None:
        monkeypatch.setattr(run_folder, "_free_bytes", lambda folder: free)
    return state


def _one_line(exc):
    text = str(exc)
    assert "\n" not in text and "inline_container" not in text and "requested and" not in text
    return text


def test_torch_full_disk_on_last_pt_is_one_line_and_the_run_resumes_to_the_same_result(tmp_path, monkeypatch,
                                                                                        reference):
    out = tmp_path / "run"
    epochs_seen = []
    state = {"armed": False}

    def arm(event):
        if event.kind == "epoch":
            epochs_seen.append(event.epoch)
            if event.epoch == 1:  # the write of epoch 2's last.pt fails
                state.update(_fail_on_write(monkeypatch, "last.pt", RuntimeError(TORCH_FULL_DISK), free=1868))

    with pytest.raises(TrainingError) as caught:
        _train(out, arm)
    text = _one_line(caught.value)
    assert f"could not save {out / 'last.pt'} after epoch 2" in text
    assert "the disk is full (1.9 kB free" in text and "resume the run: it continues after epoch 1" in text
    assert caught.value.resumable
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.csv", "last.pt"]  # no .part left
    assert load_checkpoint(out / "last.pt").extra["epoch"] == 1
    monkeypatch.undo()
    _train(out, resume=True)
    assert _fingerprint(out) == reference


def test_full_disk_between_last_pt_and_best_pt_leaves_a_folder_that_resumes(tmp_path, monkeypatch, reference):
    # Epoch 1: last.pt fits, best.pt does not (ENOSPC). Before the fix best.pt was written first and
    # a folder holding best.pt alone could not be resumed; now last.pt is first and resuming writes
    # the missing best.pt from it.
    out = tmp_path / "run"
    _fail_on_write(monkeypatch, "best.pt", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(TrainingError) as caught:
        _train(out)
    text = _one_line(caught.value)
    assert f"{out / 'best.pt'}" in text and "disk is full" in text and "continues after epoch 1" in text
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]
    monkeypatch.undo()
    events, result = _train(out, resume=True)
    assert "best.pt of epoch 1 had not been saved" in events[0].message
    assert _fingerprint(out) == reference
    assert result.checkpoint == out / "best.pt"


def test_kill_between_the_two_writes_of_the_final_epoch_is_completed_on_resume(tmp_path, monkeypatch):
    # The process dies after last.pt of the final epoch, before its best.pt: resuming has no epoch
    # left to run and must still leave the best.pt the uninterrupted run has.
    _train(tmp_path / "reference", epochs=1)
    out = tmp_path / "run"
    original = run_folder.save_checkpoint

    def save(path, *args, **kwargs):
        if os.path.basename(str(path)) == "best.pt":
            raise KeyboardInterrupt  # the kill lands here
        return original(path, *args, **kwargs)

    monkeypatch.setattr(run_folder, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        _train(out, epochs=1)
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]
    monkeypatch.undo()
    events, result = _train(out, epochs=1, resume=True)
    assert not any(e.kind == "step" for e in events)
    assert result.checkpoint == out / "best.pt"
    assert _fingerprint(out) == _fingerprint(tmp_path / "reference")


def test_resume_from_best_pt_alone_says_so(tmp_path):
    # A folder written by the old order (best.pt first) and killed before last.pt: it resumes from
    # best.pt with a fresh optimiser instead of refusing.
    out = tmp_path / "run"
    _train(out, epochs=1)
    (out / "last.pt").unlink()
    events, result = _train(out, resume=True)
    start = events[0]
    assert start.epoch == 1 and "resumes from best.pt with a fresh optimiser" in start.message
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert load_checkpoint(out / "last.pt").extra["epoch"] == 3


def test_nothing_to_resume_says_to_start_again(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(LiteNeXtError, match="holds neither last.pt nor best.pt.*without resuming"):
        _train(tmp_path / "run", resume=True)


@pytest.mark.parametrize("exc, free, needle", [
    (OSError(errno.ENOSPC, "No space left on device"), 10_000, "the disk is full (10.0 kB free"),
    (OSError("129600 requested and 1868 written"), 1868, "the disk is full (1.9 kB free"),
    (OSError("129600 requested and 1868 written"), 10**12, "only part of the file could be written"),
    (RuntimeError(TORCH_FULL_DISK), 0, "the disk is full (0 bytes free"),
    (PermissionError(errno.EACCES, "Permission denied"), 10**12, "Permission denied; make sure the folder"),
])
def test_write_failures_in_plain_words(monkeypatch, tmp_path, exc, free, needle):
    monkeypatch.setattr(run_folder, "_free_bytes", lambda folder: free)
    words = write_failure(exc, tmp_path, needed=50_000)
    assert needle in words and "requested" not in words and "inline_container" not in words


def test_other_runtime_errors_are_not_taken_for_a_full_disk(tmp_path):
    assert write_failure(RuntimeError("Tried to serialize object of unsupported type"), tmp_path) is None


# ---------------------------------------------------------------- a real full disk (tmpfs)

@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs mounted for the test, or a skip where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder, leave):
    """Take all but ``leave`` bytes of the disk holding ``folder``."""
    filler = folder / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
    return filler


@pytest.mark.slow
def test_real_full_disk_in_the_first_epoch_then_resume(small_disk, tmp_path, reference):
    # Sizes of this run's files, measured on an ordinary disk.
    probe = tmp_path / "probe"
    _train(probe, epochs=1)
    last, best = (probe / "last.pt").stat().st_size, (probe / "best.pt").stat().st_size
    out = small_disk / "run"
    fillers = []

    def squeeze(event):
        if event.kind == "start":  # room for last.pt, not for best.pt as well
            out.mkdir(exist_ok=True)
            fillers.append(_fill(small_disk, last + best // 2))

    with pytest.raises(TrainingError) as caught:
        _train(out, squeeze)
    text = _one_line(caught.value)
    assert "could not save" in text and "best.pt after epoch 1: the disk is full" in text
    assert not any(p.name.endswith(".part") for p in out.iterdir())
    fillers[0].unlink()
    _train(out, resume=True)
    assert _fingerprint(out) == reference


def test_a_killed_runs_temporary_files_are_cleared_and_nothing_else(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    _train(out, epochs=1)
    dead = [out / ".last.pt.k1ll3d_a.part", out / ".best.pt.k1ll3d_b.part", out / ".history.csv.k1ll3d_c.part"]
    for path in dead:
        path.write_bytes(b"PK\x03\x04 left by a kill -9")
    live = out / ".last.pt.l1ve0000.part"  # another process is writing it: held, so kept
    live.write_bytes(b"in progress")
    others = [out / "notes.txt", out / ".image.png.k1ll3d_d.part"]  # not this run's files
    for path in others:
        path.write_text("the user's")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _train(out, epochs=2, resume=True)
    assert not any(path.exists() for path in dead)
    assert live.exists() and all(path.read_text() == "the user's" for path in others)
