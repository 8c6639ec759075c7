"""The Segment widget's settings form and its channel picker (no state; ``segment.py`` holds the widget)."""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

from pathlib import Path
from typing import Any

from ...config import InferenceConfig
from ._common import DEVICES, FILE_CHOICE, model_choices

__all__ = ["segment_settings", "MODEL_FIELDS", "SHOWN", "REAPPLIED_FIELDS", "SETTINGS_OPTIONS", "NO_CHANNEL_AXIS",
           "channel_axis_choices", "axes_with_channel"]

#: "channel axis" choice for layers whose leading axes are all Z/T sliders.
NO_CHANNEL_AXIS = -1


def segment_settings(model: str = FILE_CHOICE, model_file: Path = Path(""),
                     threshold: float = InferenceConfig.threshold, instances: bool = InferenceConfig.instances,
                     min_size: int = InferenceConfig.min_size,
                     stitch_threshold: float = InferenceConfig.stitch_threshold,
                     adaptive: bool = InferenceConfig.adaptive, object_size: str = "off",
                     probabilities: bool = False, browse: bool = False, labels_store: Path = Path(""),
                     device: str = "auto") -> None:
    """Settings of the Segment widget; the fields of ``MODEL_FIELDS`` show the chosen model's."""


#: Form fields that are the model's settings (form name -> InferenceConfig name).
MODEL_FIELDS = {"threshold": "threshold", "instances": "instances", "min_size": "min_size",
                "stitch_threshold": "stitch_threshold", "adaptive": "adaptive", "object_size": "object_size"}
#: How the form shows a model's value where the field is text: an object size of 0 reads "off"
#: (which the settings check reads back as 0).
SHOWN = {"object_size": lambda value: value or "off"}
#: Those whose change re-applies post-processing to the kept probabilities, without the network
#: (a new object size needs the network: it takes effect at the next run).
REAPPLIED_FIELDS = {name: setting for name, setting in MODEL_FIELDS.items() if name != "object_size"}


SETTINGS_OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"widget_type": "ComboBox", "choices": lambda _w: model_choices(),
              "tooltip": "bundled models, models trained in this session, or a checkpoint file"},
    "model_file": {"label": "model file", "mode": "r", "filter": "*.pt *.pth *.ckpt *.zip *.yaml", "visible": False},
    "threshold": {"widget_type": "FloatSlider", "min": 0.01, "max": 0.99, "step": 0.01,
                  "tooltip": "probability above which a pixel is foreground; changing it re-applies "
                             "post-processing without re-running the network"},
    "instances": {"label": "split instances",
                  "tooltip": "number touching objects separately (watershed of the distance map)"},
    "min_size": {"label": "minimum size", "min": 0, "max": 1_000_000, "step": 1,
                 "tooltip": "remove objects smaller than this many pixels"},
    "stitch_threshold": {"label": "link through Z", "min": 0.0, "max": 0.99, "step": 0.05,
                         "tooltip": "Z stacks with instances: an object keeps the id of the object in the slice "
                                    "before it when they overlap at least this much (IoU); 0 = off"},
    "adaptive": {"label": "adapt to objects",
                 "tooltip": "adapt post-processing to the objects in the image (e.g. drop specks much smaller than "
                            "the typical object)"},
    "object_size": {"label": "object size",
                    "tooltip": "typical object diameter in pixels in this image, so that it is rescaled to the object "
                               "size the model was trained at (tile mode; next run): a number, auto (estimated from "
                               "a first pass) or 0 (off: native scale). Shows the model's value"},
    "probabilities": {"label": "probability layer", "tooltip": "also add the probability map as an Image layer"},
    "browse": {"label": "segment as I browse",
               "tooltip": "stacks too big to segment at once: segment the slice on show whenever the slider "
                          "stops, into a zarr-backed Labels layer"},
    "labels_store": {"label": "labels store", "mode": "w", "filter": "*.zarr",
                     "tooltip": "dask, zarr or multiscale images: write the labels into this new zarr store "
                                "(empty: a temporary one); memory then stays bounded"},
    "device": {"widget_type": "ComboBox", "choices": DEVICES,
               "tooltip": "auto: CUDA GPU, then Apple MPS, then the CPU"},
}


def channel_axis_choices(shape: tuple[int, ...], rgb: bool) -> list[tuple[str, int]]:
    """Choices for the channel axis of a layer: none, or one of its slider (leading) axes."""
    lead = len(shape) - (3 if rgb else 2)
    return [("none: sliders are Z / T", NO_CHANNEL_AXIS)] + [
        (f"axis {i} ({int(shape[i])} planes)", i) for i in range(max(0, lead))]


def axes_with_channel(axes: str, channel_axis: int) -> str:
    """A layer's axes (``layer_axes``) with leading axis ``channel_axis`` read as channels."""
    if channel_axis == NO_CHANNEL_AXIS:
        return axes
    return axes[:channel_axis] + "C" + axes[channel_axis + 1:]
