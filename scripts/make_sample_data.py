"""Regenerate src/napari_litenext/sample_data/ from the DSB 2018 copy in ../shared/data/dsb2018.

Maintainers only; the package ships the result. Images are stored losslessly as TIFF (grayscale
microscopy as 2-D, stained tissue as RGB); ground truth is the dataset's original instance labels,
relabelled 1..N. The brightfield sample is a crop of a 1024 x 1024 image to keep the package small.
All images come from the test split so that models trained on the train split have not seen them.

    python scripts/make_sample_data.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import tifffile
from skimage.io import imread
from skimage.segmentation import relabel_sequential

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "src" / "napari_litenext" / "sample_data"

# key -> (DSB id prefix, kind, crop (y0, x0, size) or None)
SAMPLES = {
    "fluorescence": ("a9d884ba0929", "fluorescence microscopy, nuclear stain, 256 x 256", None),
    "stained": ("e414b54f2036", "stained tissue, colour (RGB) brightfield, 256 x 320", None),
    "brightfield": ("8d05fb18ee0c", "brightfield, dark nuclei in grey cells on a white background, "
                    "512 x 512 crop of a 1024 x 1024 image", (256, 256, 512)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    dsb = args.shared / "data" / "dsb2018"
    split = json.loads((dsb / "split.json").read_text())
    (DEST / "images").mkdir(parents=True, exist_ok=True)
    (DEST / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for key, (prefix, kind, crop) in SAMPLES.items():
        (image_path,) = sorted((dsb / "images").glob(f"{prefix}*.png"))
        dsb_id = image_path.stem
        if dsb_id not in split["test"]:
            raise SystemExit(f"{dsb_id} is not in the test split; pick another image")
        image = imread(image_path)[..., :3]
        labels = tifffile.imread(dsb / "masks_instance" / f"{dsb_id}.tif")
        if crop is not None:
            y0, x0, size = crop
            image = image[y0:y0 + size, x0:x0 + size]
            labels = labels[y0:y0 + size, x0:x0 + size]
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
            image = np.ascontiguousarray(image[..., 0])
        labels = relabel_sequential(labels)[0].astype(np.uint16)
        tifffile.imwrite(DEST / "images" / f"{key}.tif", image, compression="zlib",
                         compressionargs={"level": 9}, predictor=True, photometric=
                         "rgb" if image.ndim == 3 else "minisblack", metadata=None)
        tifffile.imwrite(DEST / "labels" / f"{key}.tif", labels, compression="zlib",
                         compressionargs={"level": 9}, predictor=True, metadata=None)
        sha = hashlib.sha256(image_path.read_bytes()).hexdigest()
        rows.append((key, dsb_id, kind, int(labels.max()), sha))
        print(f"{key}: {image.shape} {image.dtype}, {labels.max()} nuclei")
    write_readme(rows)


def write_readme(rows: list[tuple[str, str, str, int, str]]) -> None:
    lines = [
        "# Sample data: DSB 2018 nuclei",
        "",
        "Three images with their ground-truth nuclei from the 2018 Data Science Bowl stage 1 training set",
        "(BBBC038, Broad Institute), released under **CC0**: no rights reserved. All three are in the",
        "fixed test split that napari-litenext's bundled nuclei model was not trained on.",
        "",
        "`images/<key>.tif` is the image (grayscale as 2-D uint8, colour as RGB uint8), `labels/<key>.tif`",
        "the instance labels (uint16, 0 = background, 1..N one nucleus each) from the dataset's original",
        "annotation, relabelled 1..N. Stored losslessly (zlib TIFF).",
        "",
        "| key | DSB 2018 image id | kind | nuclei | SHA-256 of the original PNG |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {k} | `{i}` | {kind} | {n} | `{sha[:16]}…` |" for k, i, kind, n, sha in rows]
    lines += ["", "Regenerate with `python scripts/make_sample_data.py` (needs `../shared/data/dsb2018`).", ""]
    (DEST / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
