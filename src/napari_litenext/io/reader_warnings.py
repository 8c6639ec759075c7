"""The image readers' warnings, in our words and each kind once, for command-line runs.

tifffile logs (logger ``tifffile``) and Pillow warns (``warnings``) about odd files in their own
terms, once per file, straight to stderr: ``<tifffile.TiffFile 'a.tif'> shaped series shape does
not match page shape`` a hundred times for a folder of such files. ``library_warnings_once`` turns
them into one line per kind that names the first file, plus a count at the end; Pillow's
decompression-bomb warning, which tells a user nothing about the large image they chose, is
dropped. The readers mark the file being read with ``reading(path)`` so that warnings can name it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["library_warnings_once", "print_warning", "reading"]

_reading: ContextVar[str | None] = ContextVar("napari_litenext_reading", default=None)
_TIFF_OBJECT = re.compile(r"^<tifffile\.\w+ '([^']*)'[^>]*>\s*")
_METADATA_KIND = "TIFF metadata that does not match the pixels"


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Mark ``path`` as the file being read (in this thread or task) for the warnings' messages."""
    token = _reading.set(os.fspath(path))
    try:
        yield
    finally:
        _reading.reset(token)


def print_warning(text: str) -> None:
    """Print ``napari-litenext: warning: <text>`` to stderr, above any progress bar."""
    line = f"napari-litenext: warning: {text}"
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the command line's dependencies
        print(line, file=sys.stderr)
    else:
        tqdm.write(line, file=sys.stderr)


@contextmanager
def library_warnings_once(write: Callable[[str], None] = print_warning) -> Iterator[None]:
    """Inside the block, the image readers' warnings reach ``write`` in our words, each kind once.

    Changes process-wide logging and warning hooks while it lasts, so it is meant for a command
    line run, not for a library call inside napari.

    Args:
        write: shows one line to the user (default: ``print_warning``).
    """
    files: dict[str, set[str]] = {}

    def emit(kind: str, text: str, file: str | None) -> None:
        seen = files.setdefault(kind, set())
        if not seen:
            write(text)
        # by name: the pairing step names a file by its name alone, the reader by its path
        seen.add(os.path.basename(file) if file else text)

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                emit(*_tifffile_words(record.getMessage()))

    logger = logging.getLogger("tifffile")
    handler, propagate = Handler(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            original = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
                if f"{os.sep}PIL{os.sep}" not in str(filename):
                    return original(message, category, filename, lineno, file, line)
                if category.__name__ != "DecompressionBombWarning":
                    emit(f"the image reader's warning '{message}'", _in_file(f"the image reader warns: {message}"),
                         _reading.get())
                return None

            warnings.showwarning = show
            yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    for kind, seen in files.items():
        if len(seen) > 1:
            write(f"({kind}: {len(seen)} files in all)")


def _in_file(text: str, file: str | None = None) -> str:
    file = _reading.get() or file
    return f"{file}: {text}" if file else text


def _tifffile_words(message: str) -> tuple[str, str, str | None]:
    """(kind, text, file) for a tifffile log message: ``<tifffile.TiffFile 'a.tif'> shaped series ...``."""
    match = _TIFF_OBJECT.match(message)
    file = _reading.get() or (match.group(1) if match else None)
    body = message[match.end():] if match else message
    if "series" in body and any(word in body for word in ("metadata", "does not match", "shape")):
        return _METADATA_KIND, _in_file("the file's metadata does not describe the pixels it holds; the pixels "
                                        "were read as stored (check the result, or save the file without that "
                                        "metadata)", file), file
    kind = "the TIFF reader's warning '" + re.sub(r"\d+", "N", body.split(" raised ")[0])[:80] + "'"
    return kind, _in_file(f"the TIFF reader warns: {body}", file), file
