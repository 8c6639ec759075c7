"""Cost of a model's default settings, end to end: ``predict`` of one model against another.

    python benchmarks/bench_defaults.py [--new nuclei] [--old nuclei-v1] [--images 20] [--repeats 3]

Both models segment the same images with their own stored settings (the new nuclei model adapts
its post-processing and estimates the object size; the first one does neither), interleaved
image by image with the order alternating, so load from other processes affects both alike.
Prints the median ms per image of each and their ratio. Images: the DSB 2018 validation split
(``../shared/data`` next to the checkout, or ``$LITENEXT_SHARED``), else synthetic 256 x 256
images of bright discs on noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LITENEXT_SHARED", REPO.parent / "shared"))


def images(count: int) -> list[np.ndarray]:
    """Up to ``count`` validation images, or synthetic ones without the shared data."""
    root = SHARED / "data" / "dsb2018"
    if (root / "split.json").is_file():
        from napari_litenext.io.images import read_image

        ids = json.loads((root / "split.json").read_text())["val"][:count]
        return [read_image(root / "images" / f"{i}.png") for i in ids]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    out = []
    for _ in range(count):
        img = rng.normal(30, 8, (256, 256))
        for cy, cx in rng.integers(20, 236, (12, 2)):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] += 150
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", default="nuclei")
    parser.add_argument("--old", default="nuclei-v1")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    import napari_litenext as nl

    if args.threads:
        torch.set_num_threads(args.threads)
    models = {name: nl.load_model(name) for name in (args.new, args.old)}
    data = images(args.images)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for k, image in enumerate(data):
            order = list(models) if k % 2 == 0 else list(models)[::-1]
            for name in order:
                t0 = time.perf_counter()
                nl.predict(image, models[name])
                times[name].append((time.perf_counter() - t0) * 1000)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, m in med.items():
        print(f"{name:>12s}: {m:8.1f} ms per image (median of {len(times[name])}; settings "
              f"adaptive={models[name].inference.adaptive}, object_size={models[name].inference.object_size!r})")
    print(f"ratio {args.new} / {args.old}: {med[args.new] / med[args.old]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
