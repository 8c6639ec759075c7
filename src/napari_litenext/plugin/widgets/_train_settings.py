"""The Train widget's settings: three magicgui forms whose values persist between sessions.

Each form is a function whose signature is the settings and whose options dict says how magicgui
draws them; the widget builds them with ``magicgui(fn, persist=True, **options)``.
"""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

from pathlib import Path
from typing import Any

from ...training.config import INTERACTIVE_RECIPE, MWL_PRESETS, LossConfig
from ._common import DEVICES, SCRATCH_CHOICE, model_choices

_QUICK = INTERACTIVE_RECIPE
_PRESET = MWL_PRESETS[LossConfig.preset]
#: Recipe fields that become the model's settings (form name -> InferenceConfig name).
INHERITED_FIELDS = {"mode": "mode", "patch_size": "input_size", "normalisation": "normalisation"}

__all__ = ["source_settings", "validation_settings", "recipe_settings", "VALIDATION_CHOICES",
           "SOURCE_OPTIONS", "VALIDATION_OPTIONS", "RECIPE_OPTIONS", "INHERITED_FIELDS"]

VALIDATION_CHOICES = (
    ("auto: hold out 20% (or the training pairs if only one)", "auto"),
    ("held-out fraction", "fraction"),
    ("a layer pair", "layers"),
    ("a folder pair", "folders"),
    ("the training pairs (not independent)", "train"),
)


def source_settings(source: str = "layers", images_folder: Path = Path(""), masks_folder: Path = Path(""),
                    crop_to_painted: bool = False) -> None:
    """Where training pairs come from (persisted)."""


def validation_settings(validation: str = "auto", val_fraction: float = 0.2, val_images_folder: Path = Path(""),
                        val_masks_folder: Path = Path("")) -> None:
    """Where validation pairs come from (persisted)."""


def recipe_settings(model_name: str = "my-model", start_from: str = SCRATCH_CHOICE, start_file: Path = Path(""),
                    epochs: int = _QUICK["epochs"], learning_rate: float = _QUICK["lr"],
                    batch_size: int = _QUICK["batch_size"], patch_size: int = _QUICK["patch_size"],
                    mode: str = _QUICK["mode"], normalisation: str = _QUICK["normalisation"],
                    loss: str = LossConfig.loss, mwl_preset: str = LossConfig.preset,
                    w_background: float = _PRESET["w_b"], w_object: float = _PRESET["w_o"],
                    w_margin: float = _PRESET["w_m"], margin_kernel: int = _PRESET["kernel_size"],
                    srp: bool = LossConfig.srp, srp_lambda: float = LossConfig.srp_lambda,
                    device: str = "auto", output_folder: Path = Path("")) -> None:
    """The training recipe and where the model goes (persisted); values come from the core's
    ``INTERACTIVE_RECIPE`` and ``LossConfig``, and mode, patch size and normalisation show the
    starting model's when fine-tuning."""


SOURCE_OPTIONS: dict[str, dict[str, Any]] = {
    "source": {"widget_type": "RadioButtons", "choices": ("layers", "folders"), "orientation": "horizontal",
               "label": "train on"},
    "images_folder": {"label": "images folder", "mode": "d"},
    "masks_folder": {"label": "masks folder", "mode": "d",
                     "tooltip": "binary or label masks named like the images (optionally _mask, _labels...)"},
    "crop_to_painted": {"label": "only the painted area",
                        "tooltip": "train on the box around painted labels: for images painted only in part, "
                                   "so that unpainted objects are not learnt as background"},
}

VALIDATION_OPTIONS: dict[str, dict[str, Any]] = {
    "validation": {"widget_type": "ComboBox", "choices": VALIDATION_CHOICES,
                   "tooltip": "pairs that pick the best checkpoint; never the images you will test on"},
    "val_fraction": {"label": "held-out fraction", "min": 0.0, "max": 0.9, "step": 0.05},
    "val_images_folder": {"label": "validation images", "mode": "d"},
    "val_masks_folder": {"label": "validation masks", "mode": "d"},
}

RECIPE_OPTIONS: dict[str, dict[str, Any]] = {
    "model_name": {"label": "model name"},
    "start_from": {"widget_type": "ComboBox", "label": "start from", "choices": lambda _w: model_choices(True),
                   "tooltip": "random weights, or fine-tune a bundled, session or file model"},
    "start_file": {"label": "start file", "mode": "r", "filter": "*.pt *.pth *.ckpt *.zip *.yaml", "visible": False},
    "epochs": {"min": 1, "max": 100_000},
    "learning_rate": {"label": "learning rate", "min": 1e-6, "max": 1.0, "step": 1e-4},
    "batch_size": {"label": "batch size", "min": 1, "max": 1024},
    "patch_size": {"label": "patch size", "min": 16, "max": 4096, "step": 16,
                   "tooltip": "network input edge in pixels (multiple of 16)"},
    "mode": {"widget_type": "ComboBox", "choices": ("tile", "resize"),
             "tooltip": "tile: native-resolution patches (cells, nuclei); resize: whole image resized (lesions)"},
    "normalisation": {"widget_type": "ComboBox", "choices": ("dtype", "percentile", "minmax"),
                      "tooltip": "how pixels become network input; shows the starting model's when fine-tuning"},
    "loss": {"widget_type": "ComboBox", "choices": (("Marginal Weight Loss", "mwl"), ("Dice + BCE", "dice_bce"))},
    "mwl_preset": {"widget_type": "ComboBox", "label": "MWL preset", "choices": ("boundary", "authors-code")},
    "w_background": {"label": "w background", "min": 0.0, "max": 100.0, "step": 0.5},
    "w_object": {"label": "w object", "min": 0.0, "max": 100.0, "step": 0.5},
    "w_margin": {"label": "w margin", "min": 0.0, "max": 100.0, "step": 0.5},
    "margin_kernel": {"label": "margin kernel", "min": 1, "max": 51, "step": 2},
    "srp": {"label": "SRP", "tooltip": "Self-embedding Representation Parallel (two augmented views)"},
    "srp_lambda": {"label": "SRP lambda", "min": 0.0, "max": 10.0, "step": 0.01},
    "device": {"widget_type": "ComboBox", "choices": DEVICES},
    "output_folder": {"label": "output folder", "mode": "d",
                      "tooltip": "empty: ~/litenext-models/<name>-<date-time>; an existing run is never overwritten"},
}
