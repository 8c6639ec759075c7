"""Throughput of a dask LocalCluster: 2 workers against 1, one thread each, many image files.

Writes ``--files`` synthetic uint16 images (``--size`` square) as TIFF, then segments them with the
bundled nuclei model through ``predict_many`` (one task per file, each worker loading the model
once) on a LocalCluster of 1 and of 2 worker processes with one torch thread each. Cluster start
and the first model load are done before the clock starts (a warm-up task per worker), so the
ratio is the throughput of the workers. Also times the CLI end to end (``--workers N``),
cluster start included.

    python benchmarks/bench_workers.py              # 32 files of 512 x 512
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_stack_memory import _synthetic_stack  # noqa: E402


def api_seconds(files: list[Path], workers: int) -> float:
    from distributed import Client, LocalCluster

    from napari_litenext.inference.scale import predict_many

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        predict_many(files[:workers], "nuclei", client=client)  # start-up and model loading, not timed
        start = time.perf_counter()
        predict_many(files, "nuclei", client=client, instances=True)
        return time.perf_counter() - start


def cli_seconds(folder: Path, out: Path, workers: int) -> float:
    cli = str(Path(sys.executable).with_name("napari-litenext"))
    start = time.perf_counter()
    subprocess.run([cli, "predict", str(folder), "-o", str(out), "--model", "nuclei", "--instances", "-q",
                    "--workers", str(workers), "--threads-per-worker", "1"], check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        stack = _synthetic_stack(args.files, args.size)
        files = []
        for i, plane in enumerate(stack):
            files.append(folder / f"im{i:03d}.tif")
            tifffile.imwrite(files[-1], plane)
        one, two = api_seconds(files, 1), api_seconds(files, 2)
        cli_one = cli_seconds(folder, Path(tmp) / "o1", 1)
        cli_two = cli_seconds(folder, Path(tmp) / "o2", 2)
    print(f"{args.files} files of {args.size} x {args.size} uint16, nuclei model, instances, 1 thread per worker")
    print(f"{'':<28}{'1 worker (s)':>14}{'2 workers (s)':>15}{'speed-up':>10}")
    print(f"{'predict_many (warm)':<28}{one:>14.1f}{two:>15.1f}{one / two:>10.2f}")
    print(f"{'CLI --workers (cold)':<28}{cli_one:>14.1f}{cli_two:>15.1f}{cli_one / cli_two:>10.2f}")
    print(f"throughput 2 workers / 1 worker: {one / two:.2f} (bar: >= 1.7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
