"""Settings of a training run: the loss, augmentation and the run itself. Plain data, no torch.

``TrainConfig`` leaves every setting the trained model will carry (``InferenceConfig``:
normalisation, mode, input size, tiles, threshold, minimum size, instances) at ``None`` by
default, meaning "the starting model's value" when fine-tuning or resuming, and the
``InferenceConfig`` default from scratch. ``training.loop.train`` resolves them once, for every
caller (the CLI, the Train widget, scripts), and records the resolved values in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from ..config import InferenceConfig, ModelConfig
from ..errors import SettingsError

__all__ = ["AugmentConfig", "LossConfig", "TrainConfig", "MWL_PRESETS", "LOSSES", "INTERACTIVE_RECIPE",
           "INHERITED_SETTINGS", "ROBUST_AUGMENT"]

MWL_PRESETS: dict[str, dict[str, float | int]] = {
    # margin emphasised, as the paper intends (default)
    "boundary": {"w_b": 1.0, "w_o": 3.0, "w_m": 6.0, "kernel_size": 7},
    # the values found in the authors' repository
    "authors-code": {"w_b": 5.0, "w_o": 3.0, "w_m": 2.0, "kernel_size": 7},
}
LOSSES = ("mwl", "dice_bce")
_WEIGHTS = ("w_b", "w_o", "w_m")
_WEIGHT_NAMES = {"w_b": "background", "w_o": "object", "w_m": "margin"}

#: What the Train widget starts from for painted layers (small images, minutes not hours on a
#: laptop): native-resolution tiles, larger steps, percentile normalisation for any bit depth.
INTERACTIVE_RECIPE: dict[str, Any] = {"epochs": 50, "lr": 1e-3, "batch_size": 8, "patch_size": 128,
                                      "mode": "tile", "normalisation": "percentile"}

#: TrainConfig fields that become the model's InferenceConfig (TrainConfig name -> InferenceConfig name).
INHERITED_SETTINGS = {"normalisation": "normalisation", "percentiles": "percentiles", "invert": "invert",
                      "mode": "mode", "patch_size": "input_size", "tile_size": "tile_size",
                      "tile_overlap": "tile_overlap", "threshold": "threshold", "min_size": "min_size",
                      "instances": "instances"}


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; ``AugmentConfig(enabled=False)`` turns everything off.

    The first six fields are the specification's recipe. The rest (all off by default, so a
    recipe that does not name them trains as before) widen what the model sees, for images from
    other labs, stains and magnifications (``ROBUST_AUGMENT`` turns them on):

    Attributes:
        scale: probability of zooming a patch by a factor drawn log-uniformly from ``scale_range``
            (2 = objects twice as large).
        stain: probability of jittering the haematoxylin, eosin and DAB optical densities, each
            scaled by 1 +- ``stain_sigma`` and shifted by +- ``stain_sigma``.
        hue_saturation: probability of rotating the hue by up to +- ``hue_degrees`` and scaling
            the saturation by a factor in ``saturation_range``.
        greyscale: probability of replacing the colours by their luminance.
        contrast: probability of a brightness shift (+- 0.1), contrast factor and gamma, each
            drawn from ``contrast_range`` (gamma log-uniformly).
        invert: probability of inverting intensities (bright objects on dark become dark on bright).
        noise: probability of adding Gaussian noise of a standard deviation up to ``noise_std``.
    """

    enabled: bool = True
    rotate_degrees: float = 20.0
    hflip: float = 0.5
    vflip: float = 0.1
    blur: float = 0.5
    blur_kernels: tuple[int, ...] = (3, 5, 7)
    scale: float = 0.0
    scale_range: tuple[float, float] = (0.5, 2.0)
    stain: float = 0.0
    stain_sigma: float = 0.05
    hue_saturation: float = 0.0
    hue_degrees: float = 30.0
    saturation_range: tuple[float, float] = (0.5, 1.5)
    greyscale: float = 0.0
    contrast: float = 0.0
    contrast_range: tuple[float, float] = (0.7, 1.4)
    invert: float = 0.0
    noise: float = 0.0
    noise_std: float = 0.08

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "blur", "scale", "stain", "hue_saturation", "greyscale", "contrast",
                     "invert", "noise"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise SettingsError(f"augmentation probability {name} must be in [0, 1], got {value!r}")
        for name in ("scale_range", "saturation_range", "contrast_range"):
            value = tuple(getattr(self, name))
            least = 0.0 if name == "saturation_range" else 1e-6  # zero saturation is greyscale; zero zoom is nothing
            if len(value) != 2 or not all(_is_real(v) and v >= least for v in value) or value[0] > value[1]:
                raise SettingsError(f"augmentation {name} must be (low, high) with {'0 <=' if least == 0 else '0 <'} "
                                    f"low <= high, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for name in ("stain_sigma", "hue_degrees", "noise_std", "rotate_degrees"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                raise SettingsError(f"augmentation {name} must be a number >= 0, got {value!r}")
        object.__setattr__(self, "blur_kernels", tuple(int(k) for k in self.blur_kernels))


#: Augmentation for images unlike the training set: the recipe's geometry and blur plus scale
#: 0.5-2x, stain, hue/saturation, greyscale, contrast/gamma, inversion and noise.
ROBUST_AUGMENT: dict[str, Any] = {"scale": 0.5, "stain": 0.5, "hue_saturation": 0.5, "greyscale": 0.2,
                                  "contrast": 0.5, "invert": 0.2, "noise": 0.3}


@dataclass(frozen=True)
class LossConfig:
    """The training objective: segmentation loss and SRP, built once and passed unchanged to the loss.

    MWL weights left at ``None`` take the preset's values when the config is made, so the object
    always holds the values actually used (the checkpoint and the model card record them).

    Attributes:
        loss: ``"mwl"`` (Marginal Weight Loss) or ``"dice_bce"`` (soft Dice + BCE).
        preset: ``"boundary"`` (w_b 1, w_o 3, w_m 6, kernel 7; margin emphasised as the paper
            intends) or ``"authors-code"`` (w_b 5, w_o 3, w_m 2, kernel 7).
        w_b, w_o, w_m: background, object-core and margin weights of MWL (>= 0).
        kernel_size: odd edge of MWL's structuring element; the margin band is ``kernel_size - 1``
            pixels wide.
        srp: train with Self-embedding Representation Parallel.
        srp_lambda: weight of SRP's representation loss (>= 0).
        srp_tau: EMA decay of the SRP teacher, in [0, 1).

    Raises:
        SettingsError: unknown loss or preset, MWL values given for ``"dice_bce"``, a negative or
            non-finite weight, an even kernel.
    """

    loss: str = "mwl"
    preset: str = "boundary"
    w_b: float | None = None
    w_o: float | None = None
    w_m: float | None = None
    kernel_size: int | None = None
    srp: bool = True
    srp_lambda: float = 0.1
    srp_tau: float = 0.99

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise SettingsError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.preset not in MWL_PRESETS:
            raise SettingsError(f"unknown MWL preset {self.preset!r}; choose one of {', '.join(MWL_PRESETS)}")
        given = [k for k in (*_WEIGHTS, "kernel_size") if getattr(self, k) is not None]
        if self.loss == "dice_bce":
            if given:
                raise SettingsError(f"{', '.join(given)} only apply to the 'mwl' loss; choose loss 'mwl' or drop them")
        else:
            preset = MWL_PRESETS[self.preset]
            for name in _WEIGHTS:
                value = preset[name] if getattr(self, name) is None else getattr(self, name)
                if not _is_real(value) or value < 0:
                    raise SettingsError(f"MWL {_WEIGHT_NAMES[name]} weight {name} must be a finite number >= 0, "
                                        f"got {value!r}")
                object.__setattr__(self, name, float(value))
            k = preset["kernel_size"] if self.kernel_size is None else self.kernel_size
            if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1 or k % 2 == 0:
                raise SettingsError(f"MWL kernel_size must be an odd positive integer (e.g. 7), got {k!r}; "
                                    "an even kernel has no centre pixel")
            object.__setattr__(self, "kernel_size", int(k))
        if not _is_real(self.srp_lambda) or self.srp_lambda < 0:
            raise SettingsError(f"SRP lambda must be a number >= 0, got {self.srp_lambda!r}")
        if not _is_real(self.srp_tau) or not 0 <= self.srp_tau < 1:
            raise SettingsError(f"SRP tau must be in [0, 1), got {self.srp_tau!r}")
        object.__setattr__(self, "srp", bool(self.srp))
        object.__setattr__(self, "srp_lambda", float(self.srp_lambda))
        object.__setattr__(self, "srp_tau", float(self.srp_tau))

    def describe(self) -> str:
        """One line for a model card, with the values used and what differs from the preset."""
        if self.loss == "dice_bce":
            text = "soft Dice + BCE"
        else:
            preset = MWL_PRESETS[self.preset]
            changed = [k for k in (*_WEIGHTS, "kernel_size") if getattr(self, k) != preset[k]]
            note = f"{self.preset} preset" + (f", changed {', '.join(changed)}" if changed else "")
            text = (f"Marginal Weight Loss (w_b {self.w_b:g}, w_o {self.w_o:g}, w_m {self.w_m:g}, "
                    f"kernel {self.kernel_size}; {note})")
        if self.srp:
            text += f" + SRP (lambda {self.srp_lambda:g}, tau {self.srp_tau:g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The resolved values as a JSON-compatible dict."""
        return dataclasses.asdict(self)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; defaults are the specification's recipe.

    Attributes:
        epochs: passes over the training set.
        lr: NAdam learning rate.
        lr_step: epochs between learning-rate decays (0 = constant).
        lr_gamma: factor applied at each decay.
        batch_size: image pairs per step (each pair gives two views when SRP is on); under torchrun
            the whole batch, shared between the processes.
        loss: the objective (``LossConfig``).
        augment: augmentation settings.
        patch_size: network input edge in pixels (the model's ``input_size``; multiple of 16).
        mode, normalisation, percentiles, invert, tile_size, tile_overlap, threshold, min_size,
            instances: the ``InferenceConfig`` the model will carry. None: the starting model's
            value (``init`` or ``resume``), else ``InferenceConfig``'s default.
        val_every: validate every this many epochs (and at the last).
        seed: seeds numpy and torch for repeatable runs.
        device: "auto", "cpu", "cuda", "mps".
        amp: bfloat16 autocast on CUDA (ignored elsewhere).
        init: start from this bundled model name or checkpoint path (fine-tuning); None = scratch.
        resume: continue the run in ``output_dir`` from its last.pt.
        output_dir: folder for best.pt, last.pt, history.csv.
        overwrite: allow writing into an output_dir that already holds a model.
        name: model name recorded in the model card.
        model: network shape; None: the starting model's, or the paper's from scratch.
        max_patches_per_image: cap on patches an image contributes per epoch in tile mode.
        resize_mix: in tile mode, share of patches that are whole images resized to the patch
            size instead of native-resolution crops (scale augmentation; 0 = off).

    Raises:
        SettingsError: a value out of range (the message names it).
    """

    epochs: int = 300
    lr: float = 1e-4
    lr_step: int = 100
    lr_gamma: float = 0.25
    batch_size: int = 32
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patch_size: int | None = None
    mode: str | None = None
    normalisation: str | None = None
    percentiles: tuple[float, float] | None = None
    invert: bool | None = None
    tile_size: int | None = None
    tile_overlap: float | None = None
    threshold: float | None = None
    min_size: int | None = None
    instances: bool | None = None
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    init: str | None = None
    resume: bool = False
    output_dir: str | None = None
    overwrite: bool = False
    name: str = "custom"
    model: ModelConfig | None = None
    max_patches_per_image: int = 16
    resize_mix: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}"),
            (self.lr_step >= 0 and 0 < self.lr_gamma <= 1, "lr_step must be >= 0 and lr_gamma in (0, 1]"),
            (0 <= self.resize_mix <= 1, f"resize_mix must be in [0, 1], got {self.resize_mix}"),
            (self.max_patches_per_image >= 1, f"max_patches_per_image must be >= 1, got {self.max_patches_per_image}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        # Bad inference values are refused now, before any data is read.
        InferenceConfig().with_overrides(**self.inference_overrides())

    def inference_overrides(self) -> dict[str, Any]:
        """The inference settings this run sets, as ``InferenceConfig`` names (None: inherited)."""
        return {ours: getattr(self, name) for name, ours in INHERITED_SETTINGS.items()}

    def inference_config(self, start: InferenceConfig | None = None) -> InferenceConfig:
        """The settings the trained model will carry: ``start`` (the starting model's, or the
        defaults from scratch) with this run's non-None values applied."""
        return (start if start is not None else InferenceConfig()).with_overrides(**self.inference_overrides())

    def resolved(self, inference: InferenceConfig, model: ModelConfig) -> "TrainConfig":
        """A copy with every inherited setting filled in, as recorded in the checkpoint."""
        values = {name: getattr(inference, ours) for name, ours in INHERITED_SETTINGS.items()}
        return dataclasses.replace(self, model=model, **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible settings, for checkpoints and reports."""
        out = dataclasses.asdict(self)
        for key, value in list(out.items()):
            if isinstance(value, tuple):
                out[key] = list(value)
        out["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["augment"].items()}
        out["model"] = self.model.to_dict() if self.model is not None else None
        return out
