"""napari sample data: three DSB 2018 nuclei images (CC0) with their ground-truth labels.

Each sample opens as an Image layer and a Labels layer holding the dataset's instance annotation,
so a user can run the segmentation and compare. The files and their provenance are in
``sample_data/`` (see its README.md). Only tifffile and numpy are imported: napari calls these
functions from its File > Open Sample menu and nothing here needs torch or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAMPLES", "SAMPLE_DIR", "Sample", "sample_image_paths", "load_sample",
           "fluorescence_nuclei", "stained_nuclei", "brightfield_nuclei"]

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


@dataclass(frozen=True)
class Sample:
    """One bundled sample.

    Attributes:
        key: file stem under ``sample_data/images`` and ``sample_data/labels``.
        title: layer name prefix shown in napari.
        dsb_id: the DSB 2018 image id it comes from.
        n_nuclei: number of annotated nuclei (labels 1..n_nuclei).
    """

    key: str
    title: str
    dsb_id: str
    n_nuclei: int

    @property
    def image_path(self) -> Path:
        return SAMPLE_DIR / "images" / f"{self.key}.tif"

    @property
    def labels_path(self) -> Path:
        return SAMPLE_DIR / "labels" / f"{self.key}.tif"


SAMPLES: dict[str, Sample] = {
    s.key: s
    for s in (
        Sample("fluorescence", "DSB fluorescence nuclei",
               "a9d884ba0929dac87c2052ce5b15034163685317d7cff45c40b0f7bd9bd4d9e7", 65),
        Sample("stained", "DSB stained nuclei (RGB)",
               "e414b54f2036bcab61b9c0a966f65adf4b169097c13c740e03d6292ac076258c", 63),
        Sample("brightfield", "DSB brightfield nuclei",
               "8d05fb18ee0cda107d56735cafa6197a31884e0a5092dc6d41760fb92ae23ab4", 33),
    )
}


def sample_image_paths() -> list[Path]:
    """Paths of the bundled sample images, in a fixed order (used by the demo and the tests)."""
    return [s.image_path for s in SAMPLES.values()]


def load_sample(key: str) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data for one sample: ``[(image, kwargs, "image"), (labels, kwargs, "labels")]``.

    Args:
        key: one of ``SAMPLES`` (``"fluorescence"``, ``"stained"``, ``"brightfield"``).

    Returns:
        The image (2-D uint8 or H x W x 3 uint8) and its ground-truth instance labels (uint16,
        same height and width) as napari layer-data tuples.

    Raises:
        KeyError: for an unknown key (the message lists the known ones).
        FileNotFoundError: if the package was installed without its sample files.
    """
    import tifffile

    try:
        sample = SAMPLES[key]
    except KeyError:
        raise KeyError(f"unknown sample {key!r}; choose one of {sorted(SAMPLES)}") from None
    for path in (sample.image_path, sample.labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"sample file {path} is missing; reinstall napari-litenext")
    image = tifffile.imread(sample.image_path)
    labels = tifffile.imread(sample.labels_path)
    source = {
        "dataset": "2018 Data Science Bowl stage 1 training set (BBBC038)",
        "licence": "CC0",
        "image_id": sample.dsb_id,
    }
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    image_kwargs: dict[str, Any] = {"name": sample.title, "rgb": rgb, "metadata": {"source": source}}
    if not rgb:
        # Fluorescence samples are dim (mean ~20 of 255): stretch to the data, not the dtype.
        image_kwargs["contrast_limits"] = [float(image.min()), float(max(image.max(), image.min() + 1))]
    labels_kwargs = {"name": f"{sample.title} ground truth", "opacity": 0.5,
                     "metadata": {"source": {**source, "annotation": "DSB 2018 original instance masks"}}}
    return [(np.asarray(image), image_kwargs, "image"), (np.asarray(labels), labels_kwargs, "labels")]


def fluorescence_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """Grayscale fluorescence nuclei, 256 x 256, with 65 annotated nuclei."""
    return load_sample("fluorescence")


def stained_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """Colour (RGB) stained tissue, 256 x 320, with 63 annotated nuclei."""
    return load_sample("stained")


def brightfield_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """Brightfield, dark nuclei on a bright background, 512 x 512 crop, with 33 annotated nuclei."""
    return load_sample("brightfield")
