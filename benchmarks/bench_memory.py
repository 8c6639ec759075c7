"""Peak memory and time of ``predict`` on a huge image, CPU.

Each case runs in a fresh subprocess so that its peak resident set size (``ru_maxrss`` of the whole
process: Python, torch, the image, the outputs) is its own. The requirement is an 8192 x 8192 RGB
uint8 image segmented in tile mode (semantic labels) under 1.5 GB on CPU. The model has random
weights: the cost of a forward pass does not depend on the weights.

    python benchmarks/bench_memory.py                    # tile and resize, 8192 x 8192
    python benchmarks/bench_memory.py --size 4096 --cases tile tile-instances resize
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {
    "tile": dict(mode="tile", instances=False),
    "resize": dict(mode="resize", instances=False),
    "tile-instances": dict(mode="tile", instances=True),
    "resize-instances": dict(mode="resize", instances=True),  # instance post-processing cost, fast
    # instance post-processing alone, on a map of ~64 k round nuclei (some touching); "image" is
    # the float32 probability map here
    "postprocess-instances": {},
}
LIMIT_MB = 1536


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _nuclei_probabilities(size: int):
    """A synthetic probability map: a 256 x 256 pattern of round nuclei, some touching, tiled."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    pattern = np.zeros((256, 256), np.float32)
    for cy in range(16, 256, 32):
        for cx in range(16, 256, 32):
            r = rng.uniform(8, 13)
            y, x = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
            pattern = np.maximum(pattern, ((yy - y) ** 2 + (xx - x) ** 2 <= r * r).astype(np.float32) * 0.9)
    reps = -(-size // 256)
    return np.tile(pattern, (reps, reps))[:size, :size]


def child_postprocess(size: int) -> None:
    from napari_litenext.inference.postprocess import postprocess

    baseline = _rss_mb()
    prob = _nuclei_probabilities(size)
    with_map = _rss_mb()
    start = time.perf_counter()
    labels = postprocess(prob, 0.5, instances=True, min_size=10)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "case": "postprocess-instances", "size": size, "seconds": round(seconds, 1),
        "peak_rss_mb": round(_rss_mb(), 1), "rss_after_imports_mb": round(baseline, 1),
        "rss_with_image_mb": round(with_map, 1), "foreground": round(float((labels > 0).mean()), 3),
        "objects": int(labels.max()),
    }))


def child(case: str, size: int, threads: int | None) -> None:
    import numpy as np
    import torch

    if case == "postprocess-instances":
        child_postprocess(size)
        return

    from napari_litenext.config import InferenceConfig
    from napari_litenext.network.model import LiteNeXt
    from napari_litenext.inference.predict import predict

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LiteNeXt().eval()
    model.inference = InferenceConfig(mode="tile", tile_size=512, tile_overlap=0.125, input_size=256)
    baseline = _rss_mb()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    with_image = _rss_mb()
    start = time.perf_counter()
    result = predict(image, model, device="cpu", **CASES[case])
    seconds = time.perf_counter() - start
    print(json.dumps({
        "case": case, "size": size, "seconds": round(seconds, 1),
        "peak_rss_mb": round(_rss_mb(), 1), "rss_after_imports_mb": round(baseline, 1),
        "rss_with_image_mb": round(with_image, 1),
        "foreground": round(float(result.labels.astype(bool).mean()), 3),
        "objects": int(result.labels.max()),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--cases", nargs="+", default=["tile", "resize"], choices=list(CASES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, args.threads)
        return 0
    failed = False
    print(f"{'case':<22}{'size':>7}{'peak RSS (MB)':>15}{'time (s)':>10}  (limit {LIMIT_MB} MB)")
    for case in args.cases:
        cmd = [sys.executable, __file__, "--child", case, "--size", str(args.size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{case:<22} failed:\n{proc.stderr}", file=sys.stderr)
            failed = True
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        flag = "" if r["peak_rss_mb"] < LIMIT_MB else "  OVER LIMIT"
        print(f"{case:<22}{r['size']:>7}{r['peak_rss_mb']:>15.0f}{r['seconds']:>10.1f}{flag}"
              f"   (after imports {r['rss_after_imports_mb']:.0f} MB, with image {r['rss_with_image_mb']:.0f} MB, "
              f"foreground {r['foreground']:.2f}, {r['objects']} objects)")
        failed |= bool(flag) and case == "tile"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
