"""Objects split at block faces: block-wise labels against a whole-image run.

1. A synthetic stack with objects across every block face and corner (discs, touching pairs that
   the watershed splits, rings whose holes span four blocks): post-processed in blocks and joined
   (``inference.blocks`` / ``inference.merge``), compared with ``postprocess`` on the whole stack.
2. With ../shared (DSB 2018): real images segmented by the bundled nuclei model in one process and
   in 4 blocks (``predict_blocks``, block edge half the image), labels compared up to numbering.

    python benchmarks/bench_block_merge.py [--dsb 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "inference"))
from test_merge import across_every_face, blocked_postprocess, same_up_to_numbering, split_at_faces  # noqa: E402


def synthetic() -> None:
    from napari_litenext.inference.postprocess import postprocess

    prob = across_every_face(slices=4, size=256, block=64)
    whole = postprocess(prob, 0.5, True, 0)
    blocked, plan = blocked_postprocess(prob, 64, 0.5, True, 0)
    print(f"synthetic 4 x 256 x 256, 64 px blocks: {plan.objects} objects, {plan.joined} joined across faces, "
          f"{split_at_faces(whole, blocked)} split at faces, equal up to numbering: "
          f"{same_up_to_numbering(whole, blocked)}")


def dsb(count: int) -> None:
    shared = Path(os.environ.get("LITENEXT_SHARED", REPO.parent / "shared"))
    folder = shared / "data" / "dsb2018" / "images"
    if not folder.is_dir():
        print(f"DSB: skipped, no {folder}")
        return
    from napari_litenext.inference.predict import predict
    from napari_litenext.inference.scale import predict_blocks
    from napari_litenext.io.images import read_image
    from napari_litenext.network.registry import load_model

    model = load_model("nuclei", device="cpu")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    files = [p for p in files if min(read_image(p).shape[:2]) >= 256][:count]
    with tempfile.TemporaryDirectory() as tmp:
        for n, path in enumerate(files):
            image = read_image(path)
            h, w = image.shape[:2]
            edge = max(64, -(-max(h, w) // 2 // 16) * 16)  # half the image: 4 blocks
            single = predict(image, model, instances=True, batch_size=1)
            blocked = predict_blocks(image, "nuclei", out=Path(tmp) / f"{n}.zarr", block_size=edge, instances=True,
                                     batch_size=1)
            labels = blocked.labels[:]
            print(f"DSB {path.name[:12]} {h}x{w}: {blocked.settings['blocks']['blocks']} blocks, "
                  f"{int(single.labels.max())} objects, {blocked.settings['blocks']['joined']} joined, "
                  f"{split_at_faces(single.labels, labels)} split at faces, equal up to numbering: "
                  f"{same_up_to_numbering(single.labels, labels)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsb", type=int, default=5, help="DSB images to cut into 4 blocks (0: none)")
    args = parser.parse_args()
    synthetic()
    if args.dsb:
        dsb(args.dsb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
