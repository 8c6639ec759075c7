"""Configuration dataclasses: the network's shape and how a model is used at inference.

These are plain data with no torch import, so that the package, the CLI's argument parsing and
napari's plugin discovery stay fast. Each dataclass round-trips through ``to_dict``/``from_dict``
(JSON-compatible values only) because checkpoints store them and are loaded with
``torch.load(..., weights_only=True)``, which only admits primitive containers.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .errors import SettingsError

__all__ = ["ModelConfig", "InferenceConfig", "ModelCard", "NORMALISATIONS", "MODES", "check_threshold",
           "check_inference_settings"]

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
            raise SettingsError("in_channels, base_width and fusion_dim must be positive integers")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise SettingsError(f"kernel_size must be an odd positive integer, got {self.kernel_size}")
        if len(self.depths) != 4 or any(int(d) < 1 for d in self.depths):
            raise SettingsError(f"depths must be four integers >= 1, got {self.depths!r}")

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Channels of the four encoder stages."""
        w = self.base_width
        return (w, 2 * w, 4 * w, 8 * w)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _threshold_problem(v: Any, name: str = "threshold") -> str | None:
    return None if _is_real(v) and 0.0 < v < 1.0 else f"{name} must be between 0 and 1 (exclusive), got {v!r}"


def check_threshold(value: Any, name: str = "threshold") -> float:
    """``value`` as a float if it lies in (0, 1).

    Raises:
        SettingsError: it does not; the message names the setting.
    """
    problem = _threshold_problem(value, name)
    if problem:
        raise SettingsError(problem)
    return float(value)


def _edge(name: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if _is_int(v) and v >= 16 and v % 16 == 0 else \
            f"{name} must be a multiple of 16 and at least 16, got {v!r}"
    return check


def _percentiles(v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_real(x) for x in v)
    if not ok or not 0.0 <= v[0] < v[1] <= 100.0:
        return f"percentiles must be (low, high) with 0 <= low < high <= 100, got {v!r}"
    return None


def _flag(name: str) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, (bool, _numpy_bool_types())) else f"{name} must be True or False, got {v!r}"


def _numpy_bool_types() -> tuple[type, ...]:
    """numpy's bool type when numpy is already imported (it is never imported for this)."""
    import sys

    np = sys.modules.get("numpy")
    return (np.bool_,) if np is not None else ()


def _object_size(v: Any) -> float | str | None:
    """``v`` as an object size ("auto", "off" = 0, or pixels >= 0), from a number or a text field; None if it is none."""
    if isinstance(v, str):
        text = v.strip().lower()
        if text == "auto":
            return "auto"
        if text == "off":
            return 0.0
        try:
            v = float(text)  # the command line and the widget's text field give text
        except ValueError:
            return None
    return float(v) if _is_real(v) and v >= 0 else None


# One check per inference setting, so that overrides can be checked before a model is loaded.
_INFERENCE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "normalisation": lambda v: None if v in NORMALISATIONS else
    f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {v!r}",
    "percentiles": _percentiles,
    "mode": lambda v: None if v in MODES else f"mode must be one of {', '.join(MODES)}, got {v!r}",
    "input_size": _edge("input_size"),
    "tile_size": _edge("tile_size"),
    "tile_overlap": lambda v: None if _is_real(v) and 0.0 <= v < 0.5 else f"tile_overlap must be in [0, 0.5), got {v!r}",
    "threshold": _threshold_problem,
    "min_size": lambda v: None if _is_int(v) and v >= 0 else f"min_size must be an integer >= 0, got {v!r}",
    "instances": _flag("instances"),
    "stitch_threshold": lambda v: None if _is_real(v) and 0.0 <= v < 1.0 else
    f"stitch_threshold must be in [0, 1) (0 = off), got {v!r}",
    "invert": _flag("invert"),
    "adaptive": _flag("adaptive"),
    "object_size": lambda v: None if _object_size(v) is not None else
    f"object_size must be 'auto', 'off' (0) or the typical object diameter in pixels (a number > 0), got {v!r}",
    "trained_object_size": lambda v: None if _is_real(v) and v >= 0 else
    f"trained_object_size must be a number of pixels >= 0 (0 = unknown), got {v!r}",
}
# Plain Python values in the config (numpy scalars from a form or an array would not survive
# torch's safe loader in a checkpoint).
_INFERENCE_TYPES: dict[str, Callable[[Any], Any]] = {
    "percentiles": lambda v: (float(v[0]), float(v[1])), "input_size": int, "tile_size": int,
    "tile_overlap": float, "threshold": float, "min_size": int, "instances": bool, "invert": bool,
    "stitch_threshold": float, "adaptive": bool, "object_size": _object_size,
    "trained_object_size": float,
}


@dataclass(frozen=True)
class InferenceConfig(_DictMixin):
    """How a trained model is used; stored in every checkpoint, the one owner of these settings.

    Every caller (``segment``/``predict``, the CLI, the Segment widget, evaluation, training's
    validation) starts from the model's stored values and applies only what its user changed
    (``with_overrides``), so the same settings give the same labels everywhere.

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
        instances: number touching objects separately (int32 ids) instead of a 0/1 mask.
        stitch_threshold: with instances, link ids through a Z stack: an object takes the id of
            the object in the previous slice it overlaps with at least this IoU (0 = off).
        invert: invert intensities after normalisation (e.g. dark nuclei on bright background).
        adaptive: adapt post-processing to the objects in the image (``postprocess``'s
            ``adaptive``); not applied by block-wise runs (``inference.scale``), which record so.
        object_size: the typical object diameter in pixels in the images to segment, so that they
            are rescaled to the size the model was trained at (as Cellpose's diameter): ``0``
            runs at native scale (off), ``"auto"`` estimates it from a first pass, a number > 0
            gives it (see ``inference.object_size``). Needs ``trained_object_size``.
        trained_object_size: object diameter in pixels of the training masks at the scale the
            model was trained (the median over images of ``estimate_object_size``; a property of
            the model, recorded by tile-mode training); 0 = unknown.
    """

    normalisation: Literal["dtype", "percentile", "minmax"] = "dtype"
    percentiles: tuple[float, float] = (1.0, 99.8)
    mode: Literal["tile", "resize"] = "resize"
    input_size: int = 256
    tile_size: int = 512
    tile_overlap: float = 0.125
    threshold: float = 0.5
    min_size: int = 0
    instances: bool = False
    stitch_threshold: float = 0.0
    invert: bool = False
    adaptive: bool = False
    object_size: float | Literal["auto"] = 0.0
    trained_object_size: float = 0.0

    def __post_init__(self) -> None:
        for name, value in check_inference_settings(**self.to_dict()).items():
            object.__setattr__(self, name, value)

    def with_overrides(self, **values: Any) -> "InferenceConfig":
        """A copy with the given settings changed; ``None`` values keep this config's value.

        Raises:
            SettingsError: an unknown setting or a value out of range (the message names it).
        """
        given = check_inference_settings(**values)
        return dataclasses.replace(self, **given) if given else self


def check_inference_settings(**values: Any) -> dict[str, Any]:
    """Check inference settings without a model; returns the ones that are not None.

    Lets the CLI and the widgets refuse a bad value before loading anything.

    Raises:
        SettingsError: an unknown setting name or a value out of range.
    """
    unknown = sorted(set(values) - set(_INFERENCE_CHECKS))
    if unknown:
        raise SettingsError(f"unknown inference setting(s) {unknown}; known: {sorted(_INFERENCE_CHECKS)}")
    given = {}
    for name, value in values.items():
        if value is None:
            continue
        problem = _INFERENCE_CHECKS[name](value)
        if problem:
            raise SettingsError(problem)
        given[name] = _INFERENCE_TYPES.get(name, str)(value)
    return given


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
