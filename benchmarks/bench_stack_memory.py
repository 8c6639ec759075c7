"""Memory of ``napari-litenext predict`` on a stack, in memory vs ``--low-memory``.

Writes an uncompressed ZYX uint16 TIFF of synthetic nuclei, then segments it twice with the
bundled nuclei model (instances, so the labels are int32), each run in its own process:

* normally: the stack, the float32 probability map and the labels are arrays in memory;
* with ``--low-memory``: the stack is memory-mapped and both outputs are memory-mapped files.

The number that decides whether a stack larger than RAM can be segmented is the process's
*anonymous* memory (``RssAnon``: memory that only swap could free), sampled every 20 ms from
``/proc``. File-backed pages of memory maps also count in the usual RSS while they are cached, but
the kernel can drop them at any time, so peak RSS is shown for information only. Linux only.

    python benchmarks/bench_stack_memory.py                  # 16 x 2048 x 2048
    python benchmarks/bench_stack_memory.py --slices 64 --size 1024
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _synthetic_stack(slices: int, size: int):
    """Bright round nuclei on a dim noisy background, shifted per slice."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    stack = np.empty((slices, size, size), np.uint16)
    for z in range(slices):
        plane = rng.normal(400, 60, (size, size))
        cy, cx = (yy + 7 * z) % 48 - 24, (xx + 5 * z) % 48 - 24
        plane[cy * cy + cx * cx < 144] += 3000
        stack[z] = np.clip(plane, 0, 65535)
    return stack


def measure(cli: str, stack_path: Path, out: Path, extra: list[str]) -> dict:
    """Run one ``predict`` and sample its anonymous and total resident memory."""
    return run_sampled([cli, "predict", str(stack_path), "-o", str(out), "--model", "nuclei", "--instances", "-q"]
                       + extra)


def run_sampled(cmd: list[str]) -> dict:
    """Run a command; its peak anonymous and total resident memory (MB) and wall time (s)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "VmRSS": 0}

    def sample() -> None:
        while proc.poll() is None:
            for field in peaks:
                peaks[field] = max(peaks[field], _status_kb(proc.pid, field))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return {"anon_mb": peaks["RssAnon"] / 1024, "rss_mb": peaks["VmRSS"] / 1024,
            "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        print("needs Linux (/proc) to sample memory", file=sys.stderr)
        return 1
    import numpy as np
    import tifffile

    cli = str(Path(sys.executable).with_name("napari-litenext"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stack_path = tmp / "stack.tif"
        tifffile.imwrite(stack_path, _synthetic_stack(args.slices, args.size), photometric="minisblack",
                         metadata={"axes": "ZYX"})
        input_mb = os.path.getsize(stack_path) / 2**20
        outputs_mb = args.slices * args.size * args.size * (4 + 4) / 2**20
        normal = measure(cli, stack_path, tmp / "normal", [])
        low = measure(cli, stack_path, tmp / "low", ["--low-memory"])
        same = np.array_equal(tifffile.imread(tmp / "normal" / "stack_labels.tif"),
                              tifffile.imread(tmp / "low" / "stack_labels.tif"))
    print(f"stack {args.slices} x {args.size} x {args.size} uint16: input {input_mb:.0f} MB, "
          f"probabilities + instance labels {outputs_mb:.0f} MB")
    print(f"{'run':<14}{'peak anonymous (MB)':>21}{'peak RSS (MB)':>15}{'time (s)':>10}")
    for name, r in (("in memory", normal), ("--low-memory", low)):
        print(f"{name:<14}{r['anon_mb']:>21.0f}{r['rss_mb']:>15.0f}{r['seconds']:>10.1f}")
    print(f"anonymous memory, low-memory / in memory: {low['anon_mb'] / normal['anon_mb']:.2f}; "
          f"time ratio {low['seconds'] / normal['seconds']:.2f}; identical labels: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
