"""Configuration dataclasses: the network's shape and how a model is used at inference.

These are plain data with no torch import, so that the package, the CLI's argument parsing and
napari's plugin discovery stay fast. Each dataclass round-trips through ``to_dict``/``from_dict``
(JSON-compatible values only) because checkpoints store them and are loaded with
``torch.load(..., weights_only=True)``, which only admits primitive containers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ModelConfig", "InferenceConfig", "ModelCard", "NORMALISATIONS", "MODES"]

NORMALISATIONS = ("dtype", "percentile", "minmax")
MODES = ("tile", "resize")


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-compatible dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict written by ``to_dict``.

        Raises:
            ValueError: if ``data`` has keys this version does not know; a checkpoint written by a
                newer release needs that release.
        """
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {unknown}; the file was written by a newer "
                "napari-litenext: upgrade the package to read it"
            )
        # JSON and torch's safe loader have no tuples; every sequence field here is a tuple.
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """Shape of a LiteNeXt network.

    The defaults are the paper's configuration (711,201 parameters).

    Attributes:
        in_channels: channels of the input image; the paper's model reads RGB.
        base_width: channels after the stem; each stage doubles it.
        kernel_size: depthwise kernel of the mixer blocks (odd).
        depths: mixer blocks per encoder stage (four stages).
        fusion_dim: channels of the multi-scale fusion values and keys.
    """

    in_channels: int = 3
    base_width: int = 16
    kernel_size: int = 7
    depths: tuple[int, int, int, int] = (1, 1, 1, 1)
    fusion_dim: int = 128

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.base_width < 1 or self.fusion_dim < 1:
            raise ValueError("in_channels, base_width and fusion_dim must be positive integers")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {self.kernel_size}")
        if len(self.depths) != 4 or any(int(d) < 1 for d in self.depths):
            raise ValueError(f"depths must be four integers >= 1, got {self.depths!r}")

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Channels of the four encoder stages."""
        w = self.base_width
        return (w, 2 * w, 4 * w, 8 * w)


@dataclass(frozen=True)
class InferenceConfig(_DictMixin):
    """How a trained model expects to be used; stored in every checkpoint.

    Attributes:
        normalisation: how raw pixels become floats in [0, 1]:
            ``"dtype"`` divides by the dtype's maximum (uint8 / 255, uint16 / 65535; signed types
            map their full range; 32/64-bit integers use the image's own min and max; floats are
            clipped to [0, 1] as given), the paper's protocol;
            ``"percentile"`` maps the image's ``percentiles`` (low, high) to 0 and 1 and clips,
            robust to the dim uint16 images of fluorescence microscopy;
            ``"minmax"`` maps the image's minimum and maximum to 0 and 1.
        percentiles: (low, high) used by ``"percentile"``.
        mode: ``"tile"`` runs the network at native resolution on overlapping tiles (nuclei);
            ``"resize"`` resizes the whole image to ``input_size`` and the mask back (lesions).
        input_size: network input edge in pixels for ``"resize"`` and the training patch size.
        tile_size: tile edge in pixels for ``"tile"`` (multiple of 16).
        tile_overlap: fraction of a tile shared with each neighbour, in [0, 0.5).
        threshold: probability above which a pixel is foreground.
        min_size: smallest object (pixels) kept by post-processing.
        invert: invert intensities after normalisation (e.g. dark nuclei on bright background).
    """

    normalisation: Literal["dtype", "percentile", "minmax"] = "dtype"
    percentiles: tuple[float, float] = (1.0, 99.8)
    mode: Literal["tile", "resize"] = "resize"
    input_size: int = 256
    tile_size: int = 512
    tile_overlap: float = 0.125
    threshold: float = 0.5
    min_size: int = 0
    invert: bool = False

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 and >= 16, got {self.input_size}")
        if self.tile_size < 16 or self.tile_size % 16:
            raise ValueError(f"tile_size must be a multiple of 16 and >= 16, got {self.tile_size}")
        if not 0.0 <= self.tile_overlap < 0.5:
            raise ValueError(f"tile_overlap must be in [0, 0.5), got {self.tile_overlap}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


@dataclass(frozen=True)
class ModelCard(_DictMixin):
    """Human-facing facts about a trained model, shown by ``napari-litenext models``.

    Attributes:
        name: short name, e.g. ``"nuclei"``.
        description: one paragraph on what the model segments.
        data: training data and its licence.
        recipe: loss, SRP, epochs, optimiser.
        metrics: test-split metrics, name -> value.
        limits: known failure modes.
        trained_by: "napari-litenext <version>" or "authors' code (imported)".
    """

    name: str = "untitled"
    description: str = ""
    data: str = ""
    recipe: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    limits: str = ""
    trained_by: str = ""
