"""Fuzzing the checkpoint loader: every damaged or hostile file gives a model or a CheckpointError.

Files are tiny (``hostile_files.TINY``, 78 KB on disk) and every random case is seeded, so a failure
replays. The hostile files are written by ``hostile_files``.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hostile_files import TINY, Call, Storage, View, as_views, tiny_state, write_archive, write_ours
from napari_litenext.config import InferenceConfig
from napari_litenext.errors import CheckpointError
from napari_litenext.network.checkpoint import FORMAT, Checkpoint, load_checkpoint, save_checkpoint
from napari_litenext.network.checkpoint_guard import MAX_CALLS, MAX_PICKLE_BYTES
from napari_litenext.network.model import LiteNeXt


def load_or_refuse(path: Path) -> Checkpoint | None:
    """The checkpoint, or None when refused; any other exception fails the test."""
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        return None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_checkpoint(path, LiteNeXt(TINY), InferenceConfig())
    return path


# --- damaged files -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(32))
def test_random_byte_flips(tiny, tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = bytearray(tiny.read_bytes())
    for pos in rng.integers(0, len(data), size=rng.integers(1, 9)):
        data[pos] ^= int(rng.integers(1, 256))
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    ckpt = load_or_refuse(path)
    if ckpt is not None:  # a flip in padding or an unused record: the weights are intact
        assert ckpt.sha256 == load_checkpoint(tiny).sha256


@pytest.mark.parametrize("seed", range(16))
def test_random_truncations(tiny, tmp_path, seed):
    data = tiny.read_bytes()
    length = int(np.random.default_rng(seed).integers(0, len(data)))
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:length])
    assert load_or_refuse(path) is None


def test_compressed_and_duplicate_records_are_refused(tiny, tmp_path):
    with zipfile.ZipFile(tiny) as source:
        entries = [(i.filename, source.read(i)) for i in source.infolist()]
    packed = tmp_path / "deflated.pt"
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    with pytest.raises(CheckpointError, match="compressed records"):
        load_checkpoint(packed)
    twice = tmp_path / "twice.pt"
    with zipfile.ZipFile(twice, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
        for name, data in entries + [entries[0]]:
            archive.writestr(name, data)
    with pytest.raises(CheckpointError, match="two records of the same name"):
        load_checkpoint(twice)


def test_legacy_format_is_refused(tmp_path):
    # torch's pre-1.6 format allocates every storage at its declared size before reading it.
    path = tmp_path / "legacy.pt"
    torch.save(tiny_state(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="older than 1.6"):
        load_checkpoint(path)


# --- hostile settings ----------------------------------------------------------------------------

HOSTILE_CONFIGS = [
    {"base_width": 4_000_000}, {"base_width": 1024}, {"base_width": -1}, {"base_width": 0},
    {"base_width": "16"}, {"base_width": 16.0}, {"base_width": True}, {"base_width": {"a": 1}},
    {"base_width": 10 ** 100}, {"depths": [1, 1, 1, 10 ** 6]}, {"depths": [1, 1, 1]}, {"depths": "1111"},
    {"depths": {"a": 1, "b": 2, "c": 3, "d": 4}}, {"depths": [[1], 1, 1, 1]}, {"depths": [-1, 1, 1, 1]},
    {"kernel_size": 4}, {"kernel_size": 10 ** 9 + 1}, {"in_channels": [3]}, {"fusion_dim": None},
    {"fusion_dim": 10 ** 7}, {"in_channels": 2 ** 63}, {"newer_field": 1},
]


@pytest.mark.parametrize("override", HOSTILE_CONFIGS, ids=lambda o: json.dumps(o)[:40])
def test_hostile_network_settings_are_refused(tmp_path, override):
    path = write_ours(tmp_path / "hostile.pt", config={**TINY.to_dict(), **override})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("config", ["16", [16, 7], None, 5, {"base_width": {"deep": [[[[[]]]]]}}],
                         ids=["str", "list", "none", "int", "nested"])
def test_settings_that_are_not_a_dict_are_refused(tmp_path, config):
    with pytest.raises(CheckpointError, match="network settings|base_width"):
        load_checkpoint(write_ours(tmp_path / "odd.pt", config=config))


def _random_value(rng: np.random.Generator) -> Any:
    kind = int(rng.integers(0, 7))
    if kind == 0:
        return int(rng.integers(-10 ** 12, 10 ** 12)) * int(rng.choice([1, 10 ** 20]))
    if kind == 1:
        return float(rng.normal() * 10 ** int(rng.integers(0, 30)))
    if kind == 2:
        return "".join(map(chr, rng.integers(32, 0x2FFF, size=int(rng.integers(0, 20)))))
    if kind == 3:
        return [_random_value(rng) for _ in range(int(rng.integers(0, 5)))]
    if kind == 4:
        return {"k": _random_value(rng)}
    return [None, True, False, 2 ** 31, -(2 ** 63)][int(rng.integers(0, 5))]


@pytest.mark.parametrize("seed", range(24))
def test_random_settings(tmp_path, seed):
    rng = np.random.default_rng(seed)
    config, inference = TINY.to_dict(), InferenceConfig().to_dict()
    for _ in range(int(rng.integers(1, 4))):
        target = config if rng.random() < 0.7 else inference
        target[str(rng.choice(sorted(target)))] = _random_value(rng)
    ckpt = load_or_refuse(write_ours(tmp_path / "random.pt", config=config, inference=inference))
    assert ckpt is None or ckpt.config == TINY  # nothing else fits these weights


@pytest.mark.parametrize("top", [
    {"format_version": "1"}, {"format_version": 10 ** 30}, {"format_version": None}, {"state_dict": [1, 2]},
    {"state_dict": {1: torch.zeros(1)}}, {"extra": 5}, {"sha256": 5}, {"sha256": torch.zeros(3)},
    {"card": {"name": 5}}, {"card": {"metrics": {"dice": [0.9]}}}, {"card": "a card"},
    {"inference": {"threshold": "high"}}, {"inference": {"tile_size": 10 ** 30}},
    {"inference": {"input_size": 8192}},
    {"inference": {"percentiles": [[1, 2], 3]}}, {"inference": {"mode": ["tile"]}}, {"inference": None},
], ids=lambda t: json.dumps(t, default=str)[:40])
def test_hostile_top_level_values_are_refused(tmp_path, top):
    assert load_or_refuse(write_ours(tmp_path / "top.pt", **top)) is None


# --- hostile weights -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_by_name(tmp_path, bad):
    state = tiny_state()
    state["stages.1.blocks.0.local.conv.weight"][0, 0, 1, 1] = bad
    path = write_ours(tmp_path / "nan.pt", state)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights \(first in "
                                              r"stages\.1\.blocks\.0\.local\.conv\.weight\)") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_non_finite_weights_in_the_authors_layout_are_refused(tmp_path):
    torch.manual_seed(0)
    state = LiteNeXt().state_dict()  # our key names pass the authors' key conversion unchanged
    state["head.bias"][0] = float("nan")
    torch.save({"model_state_dict": state}, tmp_path / "authors.pt")
    with pytest.raises(CheckpointError, match=r"first in head\.bias"):
        load_checkpoint(tmp_path / "authors.pt")


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_weights_must_be_floating(tmp_path, dtype):
    state = tiny_state()
    state["head.weight"] = torch.zeros(state["head.weight"].shape, dtype=dtype)
    # Complex values are refused sooner: their storage type is not among those a scan admits.
    with pytest.raises(CheckpointError, match="not dense floating-point|ComplexFloatStorage"):
        load_checkpoint(write_ours(tmp_path / "ints.pt", state))


def test_double_precision_weights_load(tmp_path):
    state = {k: v.double() for k, v in tiny_state().items()}
    model = load_checkpoint(write_ours(tmp_path / "double.pt", state)).build_model()
    assert model.head.weight.dtype == torch.float32


@pytest.mark.parametrize("change", ["extra", "missing", "both", "reshaped"])
def test_extra_and_missing_tensors_are_named(tmp_path, change):
    state = tiny_state()
    if change in ("extra", "both"):
        state["stages.4.blocks.0.local.conv.weight"] = torch.zeros(2, 2, 3, 3)
    if change in ("missing", "both"):
        del state["fusion.score.bias"]
    if change == "reshaped":
        state["head.weight"] = state["head.weight"].reshape(-1)
    expected = {"extra": "unexpected stages.4", "missing": "missing fusion.score.bias",
                "both": "missing fusion.score.bias; unexpected stages.4", "reshaped": "wrong shape head.weight"}
    with pytest.raises(CheckpointError, match=expected[change].replace(".", r"\.")):
        load_checkpoint(write_ours(tmp_path / "keys.pt", state))


def test_huge_declared_shape_is_refused_without_allocating(tmp_path):
    # A zero-stride view declares 10^12 values over 4 stored bytes; copying it needs 4 TB.
    records = {"huge": bytes(4)}
    state = as_views(tiny_state(), records)
    state["head.weight"] = View(Storage("huge", 1), (10 ** 6, 10 ** 6), (0, 0))
    payload = {"format": FORMAT, "format_version": 1, "config": TINY.to_dict(),
               "inference": InferenceConfig().to_dict(), "card": {}, "state_dict": state, "sha256": "0" * 64}
    path = write_archive(tmp_path / "huge.pt", payload, records)
    with pytest.raises(CheckpointError, match=r"wrong shape head\.weight \(1000000, 1000000\)"):
        load_checkpoint(path)


def test_weights_that_the_file_does_not_hold_are_refused(tmp_path):
    # The paper's network, every tensor a zero-stride view of one stored float: right names and
    # shapes, 2.8 MB declared in a file of a few KB.
    one = Storage("0", 1)
    state = {k: View(one, tuple(v.shape), (0,) * v.dim()) for k, v in LiteNeXt().state_dict().items()}
    path = write_archive(tmp_path / "hollow.pt", {"model_state_dict": state}, {"0": bytes(4)})
    with pytest.raises(CheckpointError, match=r"declares 2\.7 MiB of weights in a file of 1[0-9]\.[0-9] KiB"):
        load_checkpoint(path)


@pytest.mark.parametrize("obj,match", [
    (Call(bytearray, 10), "bytearray"),
    (Call(torch._utils._rebuild_device_tensor_from_cpu_tensor, torch.zeros(1), torch.float64, "cpu", False),
     "_rebuild_device_tensor_from_cpu_tensor"),
    (Call(collections.Counter, "abc"), "collections.Counter"),
], ids=["bytearray", "dtype-conversion", "counter"])
def test_calls_other_than_tensor_rebuilds_are_refused(tmp_path, obj, match):
    records: dict[str, bytes] = {}
    path = write_archive(tmp_path / "call.pt", {"model_state_dict": as_views(tiny_state(), records), "x": obj},
                         records)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_unreadable_pickles_are_refused(tmp_path):
    protocol4 = write_archive(tmp_path / "p4.pt", {"x": collections.OrderedDict()}, protocol=4)
    with pytest.raises(CheckpointError, match="STACK_GLOBAL"):
        load_checkpoint(protocol4)
    too_many = write_archive(tmp_path / "calls.pt", [collections.OrderedDict() for _ in range(MAX_CALLS + 1)])
    with pytest.raises(CheckpointError, match=f"rebuilds {MAX_CALLS + 1} objects"):
        load_checkpoint(too_many)
    too_big = write_archive(tmp_path / "big.pt", {"x": bytes(MAX_PICKLE_BYTES)})
    with pytest.raises(CheckpointError, match=r"settings pickle of 1,048,[0-9]{3} bytes \(at most 1,048,576"):
        load_checkpoint(too_big)


# --- time and memory of load_model, in a fresh process ---------------------------------------------

_MEASURE = textwrap.dedent("""
    import json, os, resource, sys, time
    from napari_litenext import load_model
    from napari_litenext.errors import CheckpointError
    import torch

    def status_mb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) / 1024

    linux = os.path.exists("/proc/self/clear_refs")
    if linux:
        # 2 GiB more address space than the imports took, so that a loader that does allocate
        # fails fast instead of taking the machine's memory.
        mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30), resource.RLIM_INFINITY))
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak resident size: the imports' peak is not the loads'
    before = status_mb("VmRSS:") if linux else 0.0
    results = {}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        try:
            load_model(path, device="cpu")
            outcome = "loaded"
        except CheckpointError:
            outcome = "refused"
        except BaseException as exc:
            outcome = type(exc).__name__
        results[path] = [outcome, time.perf_counter() - start]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 1024)
    peak = status_mb("VmHWM:") if linux else peak
    print(json.dumps({"results": results, "before_mb": before, "peak_mb": peak}))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="measures with the resource module")
def test_hostile_files_are_refused_fast_and_small(tmp_path):
    files = {
        "base_width 1024": write_ours(tmp_path / "w1024.pt", config={**TINY.to_dict(), "base_width": 1024}),
        "base_width 4e6": write_ours(tmp_path / "w4e6.pt", config={**TINY.to_dict(), "base_width": 4_000_000}),
        "depth 1e6": write_ours(tmp_path / "d1e6.pt", config={**TINY.to_dict(), "depths": [1, 1, 1, 10 ** 6]}),
        "bytearray 2 GB": write_archive(tmp_path / "bytes.pt", {"model_state_dict": {},
                                                                "x": Call(bytearray, 2 * 10 ** 9)}),
        "huge view": write_archive(tmp_path / "view.pt", {
            "format": FORMAT, "format_version": 1, "config": TINY.to_dict(), "inference": {}, "card": {},
            "state_dict": {"head.weight": View(Storage("0", 1), (10 ** 6, 10 ** 6), (0, 0))},
            "sha256": "0" * 64}, {"0": bytes(4)}),
    }
    assert all(p.stat().st_size < 10 * 2 ** 20 for p in files.values())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, files.values())], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for name, path in files.items():
        outcome, seconds = report["results"][str(path)]
        assert outcome == "refused" and seconds < 5.0, (name, outcome, seconds)
    # The bar is 1.5 GB in all; the loads themselves should add next to nothing to what
    # the imports hold (on Linux, where the peak can be reset after them).
    assert report["peak_mb"] < 1536 and report["peak_mb"] - report["before_mb"] < 200, report
