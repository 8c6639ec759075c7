"""The Train widget's work outside Qt: gathering samples from a form's values, and the worker job.

Kept free of Qt so that it can be tested and reused headless; ``train.py`` holds the widget.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ...training.data import DataError
from ._layers import LayerPair, training_samples

__all__ = ["DataSpec", "gather_samples", "train_job", "folder_value", "clock"]


@dataclasses.dataclass
class DataSpec:
    """Training and validation data as the Train widget's form describes them (see ``gather_samples``).

    Attributes:
        source: "layers" or "folders".
        validation: one of the values of ``VALIDATION_CHOICES``.
        fraction: held-out share for "fraction" (and "auto" with two or more pairs).
        crop: crop layer pairs to their painted area with at least this edge (None: whole images).
        pairs, images, masks: the training layer pairs, or the training folders.
        val_pair, val_images, val_masks: the validation layer pair or folders.
    """

    source: str = "layers"
    validation: str = "auto"
    fraction: float = 0.2
    crop: int | None = None
    pairs: list[LayerPair] = dataclasses.field(default_factory=list)
    images: Path | None = None
    masks: Path | None = None
    val_pair: LayerPair | None = None
    val_images: Path | None = None
    val_masks: Path | None = None

    @property
    def reads_files(self) -> bool:
        """Whether gathering the samples reads image files."""
        return self.source == "folders" or self.validation == "folders"


def gather_samples(spec: DataSpec) -> tuple[list[Any], list[Any], str]:
    """(training samples, validation samples, note for the user or "") for ``spec``.

    Raises:
        DataError: mismatched shapes, empty labels, unpaired files, too few pairs to hold out.
    """
    from ...training.data import samples_from_folders, split_samples

    if spec.source == "folders":
        train = samples_from_folders(spec.images, spec.masks)
    else:
        train = training_samples(spec.pairs, crop_min_edge=spec.crop)
    choice, note = spec.validation, ""
    if choice == "auto":
        if len(train) >= 2:
            choice = "fraction"
        else:
            choice = "train"
            note = ("one training image: validating on it, so the 'best' model is chosen on training data; "
                    "add a validation pair for an independent choice")
    if choice == "fraction":
        train, val = split_samples(train, spec.fraction)
    elif choice == "layers":
        val = training_samples([spec.val_pair])
    elif choice == "folders":
        val = samples_from_folders(spec.val_images, spec.val_masks)
    else:
        val = []
    return train, val, note


@dataclasses.dataclass
class _DataEvent:
    """First event of a job: how many pairs, and a note for the user."""

    n_train: int
    n_val: int
    note: str
    kind: str = "data"


def folder_value(value: Any, what: str) -> Path:
    """A folder from a FileEdit value; DataError when none is chosen."""
    text = str(value or "").strip()
    if not text or text == ".":
        raise DataError(f"choose the {what}")
    return Path(text).expanduser()


def clock(seconds: float | None) -> str:
    """Seconds as m:ss or h:mm:ss ("-" for None)."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def train_job(data: DataSpec | tuple[list[Any], list[Any], str], cfg: Any, should_stop: Any):
    """Thread-worker generator: ``training.train``'s events, then its ``TrainResult`` (+ curves.png).

    ``data`` is a ``DataSpec`` to read here, or the (train, validation, note) already gathered.
    Settings a fine-tuned model inherits are resolved by ``train`` itself, as for every caller.
    """
    from ...training.loop import train

    train_samples, val_samples, note = gather_samples(data) if isinstance(data, DataSpec) else data
    yield _DataEvent(len(train_samples), len(val_samples), note)

    result = yield from train(train_samples, val_samples, cfg, should_stop=should_stop)
    if result.history and cfg.output_dir:
        from ...training.curves import plot_history

        plot_history(result.history, Path(cfg.output_dir) / "curves.png", title=result.config.name)
    return result
