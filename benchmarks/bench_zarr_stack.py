"""Peak memory and time of ``napari-litenext predict`` on a zarr stack against today's TIFF path.

Writes one synthetic uint16 ZYX stack twice: as a zarr array (chunks 1 x 512 x 512, the issue's
layout) and as an uncompressed TIFF. Each is segmented with the bundled nuclei model and
``--instances`` in its own process, sampling peak RSS (``VmRSS``, file-backed pages included) and
anonymous memory every 20 ms:

* zarr: read a slice at a time, labels streamed into ``<name>_labels.zarr`` (no probability map);
* TIFF: ``--low-memory`` (memory-mapped input and outputs; automatic above 1 GiB).

The issue's size is 64 x 2048 x 2048 (``--slices 64``); on a 2-core machine that takes tens of
minutes per run, so the default is 2 slices of the same 2048 x 2048 size: memory per slice and
time per pixel do not depend on the number of slices. The two commands alternate ``--repeats``
times and the best of each counts; CPU time (user + system) is printed beside wall time because
the cores are shared with other jobs. Linux only.

    python benchmarks/bench_zarr_stack.py                 # 2 x 2048 x 2048, 2 repeats
    python benchmarks/bench_zarr_stack.py --slices 64     # the issue's full size
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_stack_memory import _synthetic_stack, run_sampled  # noqa: E402


def run(cmd: list[str]) -> dict:
    """``run_sampled`` plus the command's CPU time (user + system), less sensitive to other jobs."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_sampled(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def best(runs: list[dict]) -> dict:
    """Each measure's minimum over the repeats (other jobs only ever add time)."""
    return {key: min(r[key] for r in runs) for key in runs[0]}


def _same_up_to_numbering(a, b) -> bool:
    """Same objects, ids aside: one-to-one id pairs, counted a slice at a time (the stack is large)."""
    import numpy as np

    pairs, ids_a, ids_b = set(), set(), set()
    for z in range(a.shape[0]):
        sa, sb = np.asarray(a[z]).astype(np.int64), np.asarray(b[z]).astype(np.int64)
        if not np.array_equal(sa > 0, sb > 0):
            return False
        pairs.update(np.unique((sa << 32) | sb).tolist())
        ids_a.update(np.unique(sa).tolist())
        ids_b.update(np.unique(sb).tolist())
    return len(pairs) == len(ids_a) == len(ids_b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best counts")
    args = parser.parse_args()
    import tifffile
    import zarr

    cli = str(Path(sys.executable).with_name("napari-litenext"))
    common = ["--model", "nuclei", "--instances", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stack = _synthetic_stack(args.slices, args.size)
        array = zarr.open_array(str(tmp / "stack.zarr"), mode="w", shape=stack.shape, dtype=stack.dtype,
                                chunks=(1, 512, 512))
        array[:] = stack
        tifffile.imwrite(tmp / "stack.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"})
        del stack, array
        tiffs, lazies = [], []
        for _ in range(args.repeats):  # alternating, so that both see the same load from other jobs
            tiffs.append(run([cli, "predict", str(tmp / "stack.tif"), "-o", str(tmp / "tif"), "--low-memory",
                              "--overwrite"] + common))
            lazies.append(run([cli, "predict", str(tmp / "stack.zarr"), "-o", str(tmp / "zarr"), "--axes", "ZYX",
                               "--overwrite"] + common))
        tiff, lazy = best(tiffs), best(lazies)
        same = _same_up_to_numbering(tifffile.imread(tmp / "tif" / "stack_labels.tif"),
                                     zarr.open_array(str(tmp / "zarr" / "stack_labels.zarr" / "0"), mode="r"))
    pixels = args.slices * args.size * args.size
    print(f"stack {args.slices} x {args.size} x {args.size} uint16 ({pixels * 2 / 2**20:.0f} MB), "
          f"nuclei model, instances")
    print(f"best of {args.repeats} alternating runs each")
    print(f"{'input':<26}{'peak RSS (MB)':>15}{'peak anonymous (MB)':>21}{'wall (s)':>10}{'CPU (s)':>9}"
          f"{'CPU ns/pixel':>14}")
    for name, r in (("TIFF --low-memory", tiff), ("zarr (chunks 1x512x512)", lazy)):
        print(f"{name:<26}{r['rss_mb']:>15.0f}{r['anon_mb']:>21.0f}{r['seconds']:>10.1f}{r['cpu']:>9.1f}"
              f"{r['cpu'] / pixels * 1e9:>14.0f}")
    print(f"zarr peak RSS {lazy['rss_mb']:.0f} MB (bar: <= 600); time per pixel zarr / TIFF: CPU "
          f"{lazy['cpu'] / tiff['cpu']:.2f}, wall {lazy['seconds'] / tiff['seconds']:.2f} (bar: <= 1.2); "
          f"same labels up to numbering: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
