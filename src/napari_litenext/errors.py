"""Every error this package raises on purpose, under one base class.

A ``LiteNeXtError`` is a user mistake or an unusable file or setting: its message names what is
wrong and says what to do, in one line. The command line prints it as
``napari-litenext: error: ...`` (exit status 2) and the widgets show it as a notification; anything
else is a bug and keeps its traceback. The subclasses that describe bad values also derive from
``ValueError`` so that ``except ValueError`` in user code keeps working.

No imports: every layer of the package may raise these.
"""

from __future__ import annotations

__all__ = ["LiteNeXtError", "SettingsError", "InputError", "ImageReadError", "DataError", "EvaluationError",
           "CheckpointError", "TrainingError", "Cancelled"]


class LiteNeXtError(Exception):
    """Base of the package's errors; the message says what is wrong and how to fix it."""


class SettingsError(LiteNeXtError, ValueError):
    """A setting out of its range (threshold, tile size, loss weight, ...)."""


class InputError(LiteNeXtError, ValueError):
    """The image cannot be segmented as given; the message says what to change."""


class ImageReadError(InputError):
    """A file cannot be read as an image; the message names the file and the problem."""


class DataError(InputError):
    """Training data that cannot be used as given; the message lists the offending files or layers."""


class EvaluationError(InputError):
    """The images and masks cannot be evaluated as given; the message lists every problem."""


class CheckpointError(LiteNeXtError, ValueError):
    """A file is not a usable LiteNeXt checkpoint; the message says why and what to do."""


class TrainingError(LiteNeXtError, RuntimeError):
    """Training cannot go on (out of memory, diverging loss, full disk); the message says what to change."""


class Cancelled(LiteNeXtError):
    """A run ended early because its ``should_stop()`` returned True (a Stop or Cancel button)."""
