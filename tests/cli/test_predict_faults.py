"""Fault suite for ``napari-litenext predict`` (issue 12): kill -9, concurrent runs, full disks, leftovers.

Each test reproduces a failure of the code at ad991c6 and fails there: outputs replaced without
--overwrite and labels paired with another run's probabilities when two runs share --output, a file
reported as written and then deleted by the other run's roll-back, no way to finish a killed batch,
stale ``.part`` files and work folders kept forever, a full disk during --overwrite destroying the
previous outputs, and no fsync before the rename. Kills use the real command line in subprocesses;
benchmarks/race_predict.py runs the concurrent-run race many times.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_litenext.cli import main

SUFFIXES = {"labels": "_labels.tif", "probabilities": "_prob.tif", "overlay": "_overlay.png"}
STEMS = ["a", "b", "c", "d"]
ALL = ["--probabilities", "--overlay"]

# Runs the command line after arming one kill -9, before the n-th matching call of: "name" (os.link,
# os.replace or os.rename giving a file the final name TEXT), or "chmod" (of a file whose name
# contains TEXT: a temporary file, once written and before it is flushed and named).
KILLER = r"""
import os, signal, sys
call, text, nth = os.environ["KILL_AT"].split(":")
seen = [0]
def arm(real, name):
    def armed(*args, **kwargs):
        target = os.path.basename(os.fspath(args[0] if name == "chmod" else args[1]))
        if (text in target) if name == "chmod" else (target == text):
            seen[0] += 1
            if seen[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return armed
for name in (["chmod"] if call == "chmod" else ["link", "replace", "rename"]):
    setattr(os, name, arm(getattr(os, name), name))
from napari_litenext.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def batch(tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in STEMS:
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / f"{stem}.png")
    return folder


def predict_args(inputs, out, checkpoint, *extra):
    return ["predict", str(inputs), "-o", str(out), "--model", str(checkpoint), "-q", *extra]


def metadata(path: Path) -> dict:
    """The settings JSON a predict output carries (TIFF description or PNG text)."""
    if path.suffix == ".png":
        with Image.open(path) as img:
            return json.loads(img.text["napari-litenext"])
    with tifffile.TiffFile(path) as tif:
        tif.asarray()  # the whole file reads
        return json.loads(tif.pages[0].description)


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else {}


def assert_kept(before: dict[str, bytes], out: Path) -> None:
    """Files named before are unchanged, except old files of a set that a journal completed meanwhile.

    After a kill during --overwrite an image may hold new and old files; the next run completes the
    new set (recorded in its journal), so an old file may change only into the set of a sibling
    that was already there.
    """
    after = snapshot(out)
    before_ids = {n: _set_id(data, n) for n, data in before.items()}
    for name, data in before.items():
        if after[name] != data:
            stem = name.rsplit("_", 1)[0]
            siblings = {i for n, i in before_ids.items() if n != name and n.rsplit("_", 1)[0] == stem}
            assert _set_id(after[name], name) in siblings, f"{name} was replaced"


def _set_id(data: bytes, name: str) -> str:
    import io

    if name.endswith(".png"):
        with Image.open(io.BytesIO(data)) as img:
            return json.loads(img.text["napari-litenext"])["output_set"]["id"]
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return json.loads(tif.pages[0].description)["output_set"]["id"]


def assert_whole(out: Path, stems=STEMS, kinds=tuple(SUFFIXES), reference=None) -> dict[str, dict]:
    """Every image has all its files, each readable and of one output set; nothing hidden is left."""
    assert [n for n in os.listdir(out) if n.startswith(".")] == [], "temporary files or work folders left"
    sets = {}
    for stem in stems:
        metas = [metadata(out / f"{stem}{SUFFIXES[k]}") for k in kinds]
        assert len({json.dumps(m, sort_keys=True) for m in metas}) == 1, f"{stem}: files of different runs"
        sets[stem] = metas[0]
        if reference is not None:
            np.testing.assert_array_equal(tifffile.imread(out / f"{stem}_labels.tif"), reference[stem])
    return sets


@pytest.fixture
def reference(batch, random_checkpoint, tmp_path):
    out = tmp_path / "reference"
    assert main(predict_args(batch, out, random_checkpoint, *ALL)) == 0
    return {stem: tifffile.imread(out / f"{stem}_labels.tif") for stem in STEMS}


def cli_command() -> list[str]:
    """The installed ``napari-litenext`` script beside this Python (as in .venv/bin), else the same via -c."""
    script = Path(sys.executable).parent / "napari-litenext"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from napari_litenext.cli import main; sys.exit(main(sys.argv[1:]))"]


def child_env(**extra) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **extra)


def run_killed(args: list[str], kill_at: str | None, out: Path, seed: int | None) -> int:
    """Run the CLI in a subprocess and kill -9 it at ``kill_at`` (call:text:n) or at a random moment."""
    if kill_at is not None:
        proc = subprocess.run([sys.executable, "-c", KILLER, *args], env=child_env(KILL_AT=kill_at),
                              capture_output=True, text=True, timeout=120)
        return proc.returncode
    proc = subprocess.Popen(cli_command() + args, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # a random moment once writing has begun (before it, a kill leaves nothing to test)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(True for _ in out.iterdir()):
            break
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0, 0.3))
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=120)


KILLS = {
    # name: (kill point, extra options, overwrite a threshold-0.3 set first)
    "staging b": ("chmod:b_prob.tif:1", [], False),  # b's labels staged, its probabilities not flushed
    "naming c": ("name:c_prob.tif:1", [], False),  # c's labels named, its probabilities and overlay not
    "low-memory": ("chmod:a_labels.tif:1", ["--low-memory"], False),  # a work folder in use
    "overwrite": ("name:b_prob.tif:1", ["--overwrite"], True),  # b half replaced by --overwrite
    "random": (None, ["--low-memory"], False),  # more in test_random_kills
}


def test_killed_batches_are_finished_by_skip_existing(batch, random_checkpoint, reference, tmp_path, capsys):
    outs = {name: tmp_path / f"out-{i}" for i, name in enumerate(KILLS)}
    for name, (_, _, previous) in KILLS.items():
        if previous:
            assert main(predict_args(batch, outs[name], random_checkpoint, *ALL, "--threshold", "0.3")) == 0

    def kill(item):
        i, (name, (point, extra, _)) = item
        args = predict_args(batch, outs[name], random_checkpoint, *ALL, *extra)
        return name, run_killed(args, point, outs[name], seed=i)

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = dict(pool.map(kill, enumerate(KILLS.items())))
    for name, (point, _, _) in KILLS.items():
        if point is not None:
            assert codes[name] == -signal.SIGKILL, f"{name}: the kill point was not reached"

    for name in KILLS:
        out = outs[name]
        before = snapshot(out)
        capsys.readouterr()
        # a plain run refuses to touch the half-done batch and says how to finish it
        if before and name == "naming c":
            assert main(predict_args(batch, out, random_checkpoint, *ALL)) == 2
            assert "--skip-existing" in capsys.readouterr().err
        assert main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")) == 0, name
        sets = assert_whole(out)
        assert_kept(before, out)  # named files are kept, never redone; a journaled set is completed
        after = snapshot(out)
        for stem, meta in sets.items():
            if meta["threshold"] == 0.5:
                np.testing.assert_array_equal(tifffile.imread(out / f"{stem}_labels.tif"), reference[stem])
        assert main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")) == 0
        assert snapshot(out) == after  # nothing left to do
    # the journal completed b's half-replaced set with the new threshold, c and d keep the old one
    thresholds = {s: m["threshold"] for s, m in assert_whole(outs["overwrite"]).items()}
    assert thresholds == {"a": 0.5, "b": 0.5, "c": 0.3, "d": 0.3}


def test_two_concurrent_runs_replace_mix_and_lose_nothing(batch, random_checkpoint, tmp_path, monkeypatch,
                                                          capsys):
    # Two runs with thresholds 0.3 and 0.7 into one folder, kept in step: both segment an image, then
    # both write it, each write slowed down, so that every "exists?" check races with a rename.
    other = tmp_path / "in2"
    shutil.copytree(batch, other)
    out = tmp_path / "out"
    barrier = threading.Barrier(2, timeout=60)
    import napari_litenext.inference.batch as batch_module

    segment_file, imwrite = batch_module.segment_file, tifffile.imwrite

    def in_step(*args, **kwargs):
        result = yield from segment_file(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return result

    def slow_imwrite(*args, **kwargs):
        time.sleep(0.1)
        return imwrite(*args, **kwargs)

    monkeypatch.setattr(batch_module, "segment_file", in_step)
    monkeypatch.setattr(tifffile, "imwrite", slow_imwrite)
    runs = {"0.3": batch, "0.7": other}
    codes = {}

    def run(threshold):
        codes[threshold] = main(predict_args(runs[threshold], out, random_checkpoint, *ALL, "--threshold", threshold))

    threads = [threading.Thread(target=run, args=(t,)) for t in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    err = capsys.readouterr().err  # lines of the two threads may be interleaved
    failed = {t: set(re.findall(re.escape(f"error: {runs[t]}{os.sep}") + r"(\w+)\.png: ", err)) for t in runs}
    for stem in STEMS:
        labels, prob = (out / f"{stem}{SUFFIXES[k]}" for k in ("labels", "probabilities"))
        for t in runs:
            if stem not in failed[t]:
                assert labels.exists(), f"{stem}: reported written by the {t} run, but its labels are gone"
                assert f"{metadata(labels)['threshold']:.1f}" == t, f"{stem}: the {t} run's labels were replaced"
        assert metadata(prob)["threshold"] == metadata(labels)["threshold"], f"{stem}: mixed runs"
        assert len([t for t in runs if stem in failed[t]]) == 1, f"{stem}: exactly one run writes it"
    assert_whole(out)  # no mixed or partial sets, nothing left behind
    for t in runs:
        assert codes[t] == (1 if failed[t] else 0)


def test_concurrent_skip_existing_runs_share_a_batch(batch, random_checkpoint, reference, tmp_path):
    out = tmp_path / "out"
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(
        main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [0, 0]
    assert_whole(out, reference=reference)


def truncating_enospc(real, text):
    """``real`` (tifffile.imwrite) that, for a file named like ``text``, stops half-way on a full disk."""

    def write(path, *args, **kwargs):
        real(path, *args, **kwargs)
        if text in os.path.basename(os.fspath(path)):
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) // 2)
            raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_full_disk_during_overwrite_keeps_the_previous_outputs(batch, random_checkpoint, tmp_path, monkeypatch,
                                                               capsys):
    out = tmp_path / "out"
    assert main(predict_args(batch / "a.png", out, random_checkpoint, *ALL, "--threshold", "0.3")) == 0
    before = snapshot(out)
    monkeypatch.setattr(tifffile, "imwrite", truncating_enospc(tifffile.imwrite, "a_prob.tif"))
    capsys.readouterr()
    code = main(predict_args(batch / "a.png", out, random_checkpoint, *ALL, "--overwrite", "--threshold", "0.7"))
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert snapshot(out) == before  # the previous set whole, not half replaced
    assert_whole(out, stems=["a"])
    assert code == 1
    assert "a_prob.tif" in err[0] and "no space left" in err[0]


def test_failed_fsync_is_a_failed_write(batch, random_checkpoint, tmp_path, monkeypatch, capsys):
    # ext4 and XFS allocate late: a full disk can first show at fsync. Such a file is not written.
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is flushed")
    fsync = os.fsync

    def failing(fd):
        if "a_prob.tif" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    out = tmp_path / "out"
    assert main(predict_args(batch, out, random_checkpoint, *ALL)) == 1
    assert "a_prob.tif" in capsys.readouterr().err
    assert_whole(out, stems=["b", "c", "d"])
    assert not any(n.startswith("a_") for n in os.listdir(out))


def test_files_and_folder_are_flushed_around_the_rename(batch, random_checkpoint, tmp_path, monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is flushed")
    events = []
    fsync, link, replace = os.fsync, os.link, os.replace

    def record_fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd).st_ino))
        return fsync(fd)

    def record_name(real):
        def name(src, dst, *args, **kwargs):
            events.append(("name", os.path.realpath(dst), os.stat(src, follow_symlinks=False).st_ino))
            return real(src, dst, *args, **kwargs)
        return name

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "link", record_name(link))
    monkeypatch.setattr(os, "replace", record_name(replace))
    monkeypatch.setattr(os, "rename", record_name(os.rename))
    out = tmp_path / "out"
    assert main(predict_args(batch / "a.png", out, random_checkpoint, *ALL)) == 0
    folder = os.path.realpath(out)
    for kind, suffix in SUFFIXES.items():
        final = os.path.join(folder, f"a{suffix}")
        inode = os.stat(final).st_ino
        named = max(i for i, e in enumerate(events) if e[0] == "name" and e[1] == final)
        assert any(e[0] == "fsync" and e[2] == inode for e in events[:named]), f"{kind}: renamed before fsync"
        assert any(e[0] == "fsync" and e[1] == folder for e in events[named:]), f"{kind}: folder not flushed"


def test_existence_is_decided_when_the_name_is_taken(tmp_path):
    from napari_litenext.io.files import atomic_write

    target = tmp_path / "x.tif"

    def write(tmp):
        Path(tmp).write_bytes(b"mine")
        target.write_bytes(b"another run's")  # appears after any check made before writing

    with pytest.raises(FileExistsError):
        atomic_write(target, write, overwrite=False)
    assert target.read_bytes() == b"another run's"
    assert os.listdir(tmp_path) == ["x.tif"]


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(batch, random_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = [".a_labels.tif.k3j_x9q2.part", ".b_prob.tif.00000000.part", ".c_overlay.png.abcdefgh.part"]
    for name in dead:
        (out / name).write_bytes(b"x" * 1000)  # as a killed run leaves them: nobody holds them
    (out / ".litenext-work-dead1234").mkdir()
    (out / ".litenext-work-dead1234" / "labels.dat").write_bytes(b"x" * 1000)
    (out / ".notes.txt.abcdefgh.part").write_bytes(b"not ours")  # not a name predict writes
    assert main(predict_args(batch / "a.png", out, random_checkpoint)) == 0
    assert sorted(os.listdir(out)) == [".notes.txt.abcdefgh.part", "a_labels.tif"]

    # what live processes hold (another run writing, a low-memory run's work folder) stays
    from napari_litenext.io.files import claimed_folder, stage_file

    with stage_file(out / "z_labels.tif", lambda tmp: Path(tmp).write_bytes(b"live")) as live, \
            claimed_folder(out) as work:
        assert main(predict_args(batch / "b.png", out, random_checkpoint)) == 0
        assert sorted(os.listdir(out)) == sorted([".notes.txt.abcdefgh.part", "a_labels.tif", "b_labels.tif",
                                                  live.tmp.name, os.path.basename(work)])
    assert sorted(os.listdir(out)) == [".notes.txt.abcdefgh.part", "a_labels.tif", "b_labels.tif"]


def test_skip_existing_keeps_foreign_files_and_redoes_interrupted_sets(batch, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(predict_args(batch, out, random_checkpoint, *ALL)) == 0
    first = snapshot(out)
    os.unlink(out / "b_prob.tif")  # b's set is now incomplete: redone
    (out / "c_overlay.png").write_bytes(b"somebody else's picture")  # not an output of predict: kept
    capsys.readouterr()
    assert main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c_overlay.png" in err and "--overwrite" in err
    (out / "c_overlay.png").write_bytes(first["c_overlay.png"])
    assert main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")) == 0
    after = snapshot(out)
    assert_whole(out)
    assert {n for n in first if after[n] != first[n]} == {f"b{s}" for s in SUFFIXES.values()}  # b redone, others kept
    assert main(predict_args(batch, out, random_checkpoint, "--skip-existing", "--overwrite")) == 2


def test_full_tmpfs_during_overwrite(batch, random_checkpoint, tmp_path):
    # A real full disk: a small tmpfs in a user namespace (skipped where those are not allowed).
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (user namespaces) to mount a small tmpfs")
    made = tmp_path / "made"
    assert main(predict_args(batch / "a.png", made, random_checkpoint, "--probabilities", "--threshold", "0.3")) == 0
    pages = {n: -(-os.path.getsize(made / n) // 4096) for n in ("a_labels.tif", "a_prob.tif")}
    assert pages["a_prob.tif"] >= pages["a_labels.tif"] + 2
    # room for the old set, the new labels and one page: the new probabilities cannot be written
    size_kb = 4 * (2 * pages["a_labels.tif"] + pages["a_prob.tif"] + 1)
    mount, result = tmp_path / "mnt", tmp_path / "result"
    mount.mkdir()
    cli = shlex.join(cli_command())
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && cp -r {made} {mount}/out && "
              f"{cli} predict {batch / 'a.png'} -o {mount}/out --model {random_checkpoint} -q --probabilities "
              f"--overwrite --threshold 0.7 2>{tmp_path / 'err'}; echo $? > {tmp_path / 'code'}; "
              f"cp -r {mount}/out {result}")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=child_env(), timeout=120, check=True)
    assert snapshot(result) == snapshot(made)  # the previous set whole
    assert [n for n in os.listdir(result) if n.startswith(".")] == []
    assert (tmp_path / "code").read_text().strip() == "1"
    assert "no space left" in (tmp_path / "err").read_text()  # not "4096 requested and 1868 written"


@pytest.mark.slow
def test_race_benchmark_counts_nothing(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "race_predict.py"
    proc = subprocess.run([sys.executable, str(script), "--races", "2", "--images", "4", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["replaced"] == counts["mixed"] == counts["lost"] == 0 and counts["races"] == 2


@pytest.mark.slow
def test_random_kills(batch, random_checkpoint, reference, tmp_path):
    outs = [tmp_path / f"out-{i}" for i in range(9)]
    extras = [[], ["--low-memory"], ["--overwrite", "--threshold", "0.5"]]

    def kill(i):
        return run_killed(predict_args(batch, outs[i], random_checkpoint, *ALL, *extras[i % 3]), None, outs[i], 100 + i)

    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(kill, range(len(outs))))
    assert -signal.SIGKILL in codes, f"no run was killed before it finished: {codes}"
    for out in outs:
        before = snapshot(out)
        assert main(predict_args(batch, out, random_checkpoint, *ALL, "--skip-existing")) == 0
        assert_whole(out, reference=reference)
        assert_kept(before, out)
