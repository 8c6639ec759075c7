"""Writing one image's output set (labels, probabilities, overlay): all files or none.

The files are written under hidden temporary names and flushed to the disk, then named together
while the output folder is locked (``io.output_sets.publish``): another run sees all of them or
none, a name that another run took meanwhile is never replaced (the kernel decides, when the name
is taken), and nothing is ever removed that this run did not write. Each file records its set
(``output_set`` in its metadata), which is how ``set_state`` tells complete sets from interrupted
or foreign files (``skip_existing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LiteNeXtError

__all__ = ["OUTPUT_SUFFIXES", "OutputTaken", "write_output_set", "set_state", "SetState", "display_image",
           "draws_overlay"]

#: Name endings of the labels, probabilities and overlay.
OUTPUT_SUFFIXES = ("_labels.tif", "_prob.tif", "_overlay.png")
# PNG text chunk of an overlay holding the settings (a TIFF holds them in its description)
_PNG_KEY = "napari-litenext"


class OutputTaken(LiteNeXtError):
    """Another run took an output name of this image meanwhile; nothing of the image was kept."""


def draws_overlay(labels: Any) -> bool:
    """Whether an overlay is drawn for these labels (2D images only)."""
    return labels.ndim == 2


def write_output_set(source: Path, outputs: dict[str, Path], image: Any, prediction: Any, settings: dict[str, Any],
                     *, overwrite: bool = False, skip_existing: bool = False) -> bool:
    """Write the output set of one input, all files or none (see the module's docstring).

    Args:
        source: the input file (named in messages).
        outputs: kind (``"labels"``, ``"probabilities"``, ``"overlay"``) -> final path, all in one folder.
        image: the pixels segmented (for the overlay).
        prediction: ``segment``'s result.
        settings: metadata written into each file (the set's id and names are added).
        overwrite: replace existing files.
        skip_existing: keep a complete set found at the names; complete an interrupted one.

    Returns:
        False when ``skip_existing`` found the set completed by another run meanwhile (this
        run's files are dropped), else True.

    Raises:
        OutputTaken: without ``overwrite``, another run took a name meanwhile; nothing was kept.
        OSError: a file could not be written (full disk ...); nothing was kept.
    """
    from ..io.output_sets import folder_lock
    from ..io.images import stage_png, stage_tiff
    from .postprocess import overlay

    kinds = [k for k in outputs if k != "overlay" or draws_overlay(prediction.labels)]
    meta = dict(settings, output_set={"id": uuid.uuid4().hex, "files": [outputs[k].name for k in kinds],
                                      "planned": [p.name for p in outputs.values()]})
    staged = []
    try:
        for kind in kinds:
            path = outputs[kind]
            try:
                if kind == "labels":
                    staged.append(stage_tiff(path, prediction.labels, metadata=meta))
                elif kind == "probabilities":
                    # float maps gain little from zlib and are slow to compress when huge
                    staged.append(stage_tiff(path, prediction.probabilities, metadata=meta, compress=False))
                else:
                    picture = overlay(display_image(image, settings), prediction.labels)
                    staged.append(stage_png(path, picture, text={_PNG_KEY: json.dumps(meta, sort_keys=True)}))
            except OSError as exc:
                raise _write_error(source, path, exc) from None
        with folder_lock(outputs["labels"].parent):
            return _claim(source, outputs, staged, overwrite, skip_existing)
    finally:
        for s in staged:
            s.discard()


def _claim(source: Path, outputs: dict[str, Path], staged: list, overwrite: bool, skip_existing: bool) -> bool:
    """Name the staged files as the options say; called with the output folder locked."""
    from ..io.output_sets import publish

    if overwrite:
        publish(staged, replace=True)
        return True
    replace: list[Path] = []
    if skip_existing:
        state = set_state(outputs)
        if state.kind == "complete":
            return False
        if state.kind == "conflict":
            raise OutputTaken(_taken(source, state.conflicting[0]))
        replace = state.present  # files of an interrupted set: this run completes it
    try:
        publish(staged, replace=replace)
    except FileExistsError as exc:
        raise OutputTaken(_taken(source, Path(exc.filename or outputs["labels"]))) from None
    return True



def _taken(source: Path, path: Path) -> str:
    return (f"{source}: {path} was written meanwhile by another run and is kept; nothing of {source.name} "
            "was written by this run (--overwrite replaces it, --skip-existing keeps complete outputs)")


def _write_error(source: Path, path: Path, exc: OSError) -> OSError:
    """One line naming the input and the file, in words for a full disk."""
    import errno
    import shutil

    reason = exc.strerror or str(exc)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if exc.errno is None:  # numpy/tifffile report a short write as "N requested and M written"
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(path.parent).free < (1 << 20)
    if full:
        reason = "no space left on the disk"
    err = OSError(exc.errno, f"{source}: cannot write {path}: {reason}; nothing of {source.name} was kept")
    err.strerror = err.args[1]
    return err


@dataclass
class SetState:
    """What is on disk under an input's planned output names."""

    kind: str  #: "absent", "complete", "interrupted" (files of a set whose naming did not finish) or "conflict"
    present: list[Path] = field(default_factory=list)  #: planned names that exist

    @property
    def conflicting(self) -> list[Path]:
        return self.present if self.kind == "conflict" else []


_LEGACY = "legacy"  # an output of predict from before output sets were recorded


def set_state(outputs: dict[str, Path]) -> SetState:
    """Whether the planned files are absent, a complete set, an interrupted set, or something else.

    Complete: the labels file and every planned file of its set are present, readable (headers and
    data extents checked) and of that one set, and the set was planned with at least these files.
    Interrupted: every present file belongs to one set, some of whose files are missing.
    Files from an older version count as complete when all planned files are present and readable.
    """
    present = [p for p in outputs.values() if os.path.lexists(p)]
    if not present:
        return SetState("absent")
    info = {p: _set_info(p) for p in present}
    names = {p.name for p in outputs.values()}
    if len(present) == len(outputs) and all(i == _LEGACY for i in info.values()):
        return SetState("complete", present)
    labels = info.get(outputs["labels"])
    if isinstance(labels, dict) and names <= set(labels["planned"]):
        members = [p for p in outputs.values() if p.name in labels["files"]]
        if all(isinstance(info.get(p), dict) and info[p]["id"] == labels["id"] for p in members):
            return SetState("complete", present)
    ids = {i["id"] if isinstance(i, dict) else None for i in info.values()}
    if len(ids) == 1 and None not in ids:
        one = next(iter(info.values()))
        folder = outputs["labels"].parent
        if not all(os.path.lexists(folder / n) for n in one["files"]):
            return SetState("interrupted", present)
    return SetState("conflict", present)


def _set_info(path: Path) -> dict | str | None:
    """The ``output_set`` recorded in an output of predict, ``_LEGACY`` for an older one, else None.

    None also for a file that cannot be read or is shorter than its headers say.
    """
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as img:
                text = img.text.get(_PNG_KEY)  # decodes the image: a damaged file fails here
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                text = tif.pages[0].description
                size = tif.filehandle.size
                for page in tif.pages:
                    if any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
                        return None
        meta = json.loads(text)
    except Exception:  # any library's error for a damaged or foreign file
        return None
    if not isinstance(meta, dict) or not str(meta.get("software", "")).startswith("napari-litenext"):
        return None
    found = meta.get("output_set")
    if found is None:
        return _LEGACY
    try:
        if (isinstance(found["id"], str) and all(isinstance(n, str) for n in found["files"])
                and all(isinstance(n, str) for n in found["planned"])):
            return found
    except (KeyError, TypeError):
        pass
    return None


def display_image(image, settings: dict, rows_per_chunk: int = 1024):
    """The segmented pixels as uint8 (grayscale or RGB), scaled by the model's intensity range."""
    import numpy as np

    from .preprocess import apply_range, select_channels

    axes = settings["input_axes"]  # a 2D result: Y, X and maybe C, in any order
    image = image.transpose([axes.index(a) for a in "YXC" if a in axes])
    pixels = select_channels(image, settings["channel"])
    lo, hi = settings["value_range"]
    out = np.empty(pixels.shape, dtype=np.uint8)
    for r0 in range(0, pixels.shape[0], rows_per_chunk):
        chunk = apply_range(pixels[r0:r0 + rows_per_chunk], lo, hi)
        chunk *= 255.0
        chunk += 0.5
        out[r0:r0 + rows_per_chunk] = chunk.astype(np.uint8)
    return out
