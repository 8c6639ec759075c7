"""The documentation (README.md) inside a BioImage Model Zoo package.

The model card, then what a user of the package must do around the network, in particular the
steps the format cannot express (grey to RGB, normalising over the whole image rather than per
tile, tiling or resizing, hole filling, small-object removal, instance splitting).
"""

from __future__ import annotations

from typing import Any

from ..config import InferenceConfig

__all__ = ["package_readme", "normalisation_text"]


def normalisation_text(inference: InferenceConfig, dtype: str) -> str:
    """One sentence on how the package's pre-processing maps raw values to [0, 1]."""
    if inference.normalisation == "percentile":
        lo, hi = inference.percentiles
        text = (f"percentiles {lo:g} and {hi:g} of each image (all channels together) are mapped to "
                "0 and 1 (`scale_range`), then values are clipped to [0, 1]")
    elif inference.normalisation == "minmax":
        text = ("each image's minimum and maximum (all channels together) are mapped to 0 and 1 "
                "(`scale_range` 0-100 %), then values are clipped to [0, 1]")
    elif dtype == "float32":
        text = "float input is taken as already in [0, 1] and clipped to it"
    else:
        maximum = 255 if dtype == "uint8" else 65535
        text = f"{dtype} values are divided by {maximum} (`scale_linear`) and clipped to [0, 1]"
    if inference.invert:
        text += "; intensities are then inverted (1 - x)"
    return text + "."


def package_readme(model: Any, dtype: str, version: str, files: dict[str, str]) -> str:
    """Markdown text of the package documentation.

    Args:
        model: the exported LiteNeXt (``config``, ``inference``, ``card``, ``sha256``).
        dtype: the package's input data type.
        version: napari-litenext's version.
        files: weight format -> file name in the package.
    """
    card, inference = model.card, model.inference
    channels = model.config.in_channels
    sections = [
        f"# LiteNeXt {card.name}",
        card.description or "A LiteNeXt binary segmentation model.",
        f"LiteNeXt (Tran et al., arXiv 2405.15779) with {model.num_parameters():,} parameters, exported by "
        f"napari-litenext {version} from the checkpoint with SHA-256 `{model.sha256}`."
        + (f" Trained by {card.trained_by}." if card.trained_by else ""),
    ]
    for title, text in (("Training data", card.data), ("Training recipe", card.recipe),
                        ("Known limits", card.limits)):
        if text:
            sections += [f"## {title}", text]
    sections += ["## Validation", _metrics(card.metrics)]
    sections += ["## Input", "\n".join([
        f"* One 2D image as a {_tensor(channels)} tensor of raw {dtype} values (batch, channel, y, x).",
        "* **Grey images: repeat the single channel into all three channels (R = G = B).** The model was "
        "trained on RGB; the package format cannot express this step. RGBA: drop alpha. Multichannel "
        "microscopy: choose one channel and repeat it." if channels == 3 else
        f"* {channels} channels, in the order the model was trained with.",
        f"* Pre-processing (in the package): {normalisation_text(inference, dtype)}",
        "* Height and width: multiples of 16, at least 16. Pad other sizes (reflect) and crop the output back.",
    ])]
    sections += ["## How napari-litenext runs it", _procedure(inference)]
    sections += ["## Output", "\n".join([
        "* `probability`: B x 1 x H x W foreground probability in [0, 1] (the package applies the sigmoid "
        "to the network's logits).",
        f"* Mask: probability > {inference.threshold:g}, then holes filled (background enclosed by "
        f"foreground becomes foreground){_min_size(inference)}. These steps are not in the package.",
        f"* Instances (one id per object; {_instances(inference)}): connected components, each split by a "
        "watershed of its distance transform seeded at its h-maxima (h = max(1 px, 0.1 x the object's largest "
        "inscribed radius)). Not in the package either.",
    ])]
    sections += ["## Files", "\n".join(f"* `{name}`: {what}" for what, name in files.items())]
    sections += ["## Use it", "\n".join([
        "* napari-litenext (all the steps above): `napari-litenext predict IMAGE -o OUT --model THIS.zip`, "
        "or `napari_litenext.load_model(\"THIS.zip\")` in Python.",
        "* bioimageio.core: `bioimageio predict THIS.zip --inputs IMAGE.npy` (network, pre- and "
        "post-processing only).",
        "* ONNX Runtime without torch: `napari_litenext.exchange.load_onnx(\"THIS.zip\").probabilities(x)` "
        f"with x N x {channels} x H x W float32 in [0, 1] (after the pre-processing above).",
    ])]
    return "\n\n".join(s for s in sections if s) + "\n"


def _tensor(channels: int) -> str:
    return f"1 x {channels} x H x W"


def _metrics(metrics: dict) -> str:
    if not metrics:
        return "No test metrics were recorded with this model; validate it on labelled images of your own " \
               "(`napari-litenext evaluate`)."
    rows = "\n".join(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
                     for name, value in metrics.items())
    return ("Scores recorded with the model (test split unless named otherwise):\n\n| metric | value |\n"
            f"|---|---|\n{rows}\n\nCheck them on labelled images of your own with `napari-litenext evaluate`.")


def _procedure(inference: InferenceConfig) -> str:
    if inference.mode == "resize":
        return (f"Mode `resize`: the whole image is resized (bilinear) to {inference.input_size} x "
                f"{inference.input_size}, normalised, segmented in one pass, and the probability map is "
                "resized back to the image's size (bilinear). Give the package the resized image; "
                "the test input is one.")
    overlap = round(inference.tile_overlap * inference.tile_size)
    text = (f"Mode `tile`: the image is segmented at its native resolution in tiles of {inference.tile_size} x "
            f"{inference.tile_size} pixels overlapping by {overlap} pixels, blended with raised-cosine "
            "weights. Images up to a few thousand pixels wide can also be given to the package whole.")
    if inference.normalisation != "dtype":
        text += (" napari-litenext computes the intensity range once per image; a tool that tiles the "
                 "image itself applies the package's pre-processing to each tile, so each tile gets its "
                 "own range. Use large tiles (512 pixels or more) to stay close to the whole-image result.")
    return text


def _instances(inference: InferenceConfig) -> str:
    if getattr(inference, "instances", False):
        return "what napari-litenext gives for this model unless `--no-instances`"
    return "napari-litenext gives them with `--instances`"


def _min_size(inference: InferenceConfig) -> str:
    if inference.min_size > 1:
        return f", and objects smaller than {inference.min_size} pixels (8-connected) removed"
    return ""
