"""Reading the Train widget's form: the data to train on and the ``TrainConfig`` it describes.

A mixin of ``TrainWidget`` (``train.py`` keeps the layout and the run): it reads the widget's
``source``, ``validation`` and ``recipe`` forms, its pair rows and validation pickers, and its
``start_values`` (the starting model's settings shown in the recipe).
"""

# No "from __future__ import annotations": magicgui reads the settings functions' annotations as types.

from pathlib import Path
from typing import Any

from ...errors import DataError
from ._common import SCRATCH_CHOICE, resolve_model_choice
from ._layers import LayerPair, default_output_dir, full_resolution
from ._train_job import DataSpec, folder_value, gather_samples
from ._train_settings import INHERITED_FIELDS

__all__ = ["TrainFormReader", "OUTPUT_ROOT", "RUN_FILES"]

#: Where runs go when no output folder is chosen: ``OUTPUT_ROOT/<name>-<YYYYmmdd-HHMMSS>``.
OUTPUT_ROOT = Path.home() / "litenext-models"
#: Files a run writes; a chosen output folder holding any of them is refused (never overwritten).
RUN_FILES = ("best.pt", "last.pt", "history.csv", "curves.png")


class TrainFormReader:
    """What the Train widget's form asks for, as plain values safe to hand to a thread."""

    def _layer_pairs(self) -> list[LayerPair]:
        pairs = []
        for i, (image_box, labels_box) in enumerate(self.pair_rows(), start=1):
            image, labels = image_box.value, labels_box.value
            if image is None or labels is None:
                missing = "Image" if image is None else "Labels"
                raise DataError(f"pair {i} has no {missing} layer: open an image, add a Labels layer "
                                "(Layers > New Labels Layer), paint some objects and choose both")
            pairs.append(LayerPair(full_resolution(image.data, image.multiscale), labels.data, image.rgb,
                                   f"{image.name!r} / {labels.name!r}"))
        return pairs

    def data_spec(self) -> DataSpec:
        """What the form asks to train and validate on, as plain values (safe to hand to a thread).

        Layer data are taken here; folders are only named (they are read by ``gather_samples``).

        Raises:
            DataError: a layer or folder that is not chosen.
        """
        d, v = self.source, self.validation
        folders = d.source.value == "folders"
        spec = DataSpec(source=d.source.value, validation=v.validation.value,
                        fraction=float(v.val_fraction.value),
                        crop=int(self.recipe.patch_size.value) if d.crop_to_painted.value and not folders else None)
        if folders:
            spec.images = folder_value(d.images_folder.value, "images folder")
            spec.masks = folder_value(d.masks_folder.value, "masks folder")
        else:
            spec.pairs = self._layer_pairs()
        if spec.validation == "layers":
            image, labels = self.val_image.value, self.val_labels.value
            if image is None or labels is None:
                raise DataError("choose the validation Image and Labels layers")
            spec.val_pair = LayerPair(full_resolution(image.data, image.multiscale), labels.data, image.rgb,
                                      f"validation {image.name!r} / {labels.name!r}")
        elif spec.validation == "folders":
            spec.val_images = folder_value(v.val_images_folder.value, "validation images folder")
            spec.val_masks = folder_value(v.val_masks_folder.value, "validation masks folder")
        return spec

    def collect_samples(self) -> tuple[list[Any], list[Any], str]:
        """Training and validation samples from the form, and a note for the user ("" if none).

        Raises:
            DataError: missing layers or folders, mismatched shapes, empty labels, too few pairs.
        """
        return gather_samples(self.data_spec())

    def build_config(self, output_dir: Path) -> Any:
        """The ``TrainConfig`` the form describes, writing into ``output_dir``.

        From scratch the recipe's mode, patch size and normalisation are passed as shown; when
        fine-tuning only those the user changed, so the core inherits the rest from the model.

        Raises:
            SettingsError: an invalid setting (the message says which).
        """
        from ...training.config import LossConfig, TrainConfig

        r = self.recipe
        start = r.start_from.value
        init = None if start == SCRATCH_CHOICE else resolve_model_choice(start, r.start_file.value)
        mwl = r.loss.value == "mwl"
        loss = LossConfig(loss=r.loss.value, preset=r.mwl_preset.value,
                          w_b=float(r.w_background.value) if mwl else None,
                          w_o=float(r.w_object.value) if mwl else None,
                          w_m=float(r.w_margin.value) if mwl else None,
                          kernel_size=int(r.margin_kernel.value) if mwl else None,
                          srp=bool(r.srp.value), srp_lambda=float(r.srp_lambda.value))
        shown = {setting: getattr(r, name).value for name, setting in INHERITED_FIELDS.items()}
        chosen = shown if init is None else self.start_values.overrides()
        inherited = {"patch_size" if k == "input_size" else k: v for k, v in chosen.items()}
        return TrainConfig(
            epochs=int(r.epochs.value), lr=float(r.learning_rate.value), batch_size=int(r.batch_size.value),
            loss=loss, device=str(r.device.value), init=init, output_dir=str(output_dir),
            name=str(r.model_name.value).strip() or "my-model", **inherited)

    def output_dir(self) -> Path:
        """The chosen output folder, or a new one under ``OUTPUT_ROOT``.

        Raises:
            FileExistsError: the chosen folder already holds a run.
        """
        chosen = str(self.recipe.output_folder.value or "").strip()
        if chosen and chosen != ".":
            folder = Path(chosen).expanduser()
            taken = [name for name in RUN_FILES if (folder / name).exists()]
            if taken:
                raise FileExistsError(f"{folder} already holds a run ({', '.join(taken)}); choose an empty or "
                                      "new output folder, or leave it empty for a new dated one")
            return folder
        name = str(self.recipe.model_name.value).strip() or "my-model"
        return default_output_dir(OUTPUT_ROOT, name)
