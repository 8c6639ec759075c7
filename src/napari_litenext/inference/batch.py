"""Segmenting image files into an output folder: one generator behind the CLI, the widget and scripts.

``predict_files`` plans every output before any work starts, completes a set that a killed run
was naming and removes what dead runs left, refuses existing outputs (unless ``overwrite`` or
``skip_existing``), then for each file: reads it, runs ``segment`` and writes its output set
(``batch_outputs.write_output_set``: all files or none). A file that cannot be read, segmented or
written is reported and the others go on. It yields ``BatchProgress`` events and returns a
``BatchResult``; ``napari-litenext predict`` runs it in the terminal, the Segment widget in a
thread worker, so the same settings give the same files everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LiteNeXtError, SettingsError
from ..progress import Progress
from .batch_outputs import OUTPUT_SUFFIXES, OutputTaken, draws_overlay, set_state, write_output_set

__all__ = ["predict_files", "BatchProgress", "BatchResult", "plan_outputs", "tidy_output_folder", "check_outputs",
           "segment_file", "SameOutputName", "OutputsExist", "LOW_MEMORY_FILE_BYTES"]

#: Input files larger than this are segmented as with ``low_memory``.
LOW_MEMORY_FILE_BYTES = 1 << 30


class SameOutputName(LiteNeXtError):
    """Two inputs would write the same output names."""

    def __init__(self, first: Path, second: Path, stem: str) -> None:
        super().__init__(f"{first} and {second} would both write {stem}_labels.tif; "
                         "segment them into different output folders or rename one")
        self.first, self.second, self.stem = first, second, stem


class OutputsExist(LiteNeXtError):
    """Planned outputs exist and may not be replaced; nothing was written."""

    def __init__(self, paths: list[Path], skip_existing: bool) -> None:
        more = f" and {len(paths) - 4} more" if len(paths) > 4 else ""
        shown = ", ".join(str(p) for p in paths[:4]) + more
        why = ("exist and are not complete outputs for these options" if skip_existing else "already exist")
        super().__init__(f"{len(paths)} output file(s) {why} ({shown}); replace them (overwrite), keep "
                         "complete outputs (skip existing) or choose another output folder")
        self.paths, self.skip_existing = paths, skip_existing


@dataclass
class BatchProgress(Progress):
    """A step of ``predict_files``.

    ``stage`` is ``"images"`` when a file is finished (``done`` of ``total`` files; ``outcome``
    says how), ``"tidy"`` for what was cleaned up before starting, ``"note"`` for a remark about
    one file (no overlay for a stack), ``"model"`` while the model loads, else a stage of
    ``segment`` for ``file`` (``done`` of ``total`` units of that file).
    """

    file: Path | None = None  #: the file this event is about
    index: int = 0  #: its position in the batch, from 1
    count: int = 0  #: files in the batch
    outcome: str = ""  #: on ``"images"`` events: ``"written"``, ``"skipped"`` or ``"failed"`` (``message``: why)


@dataclass
class BatchResult:
    """What ``predict_files`` did with each file."""

    written: list[Path] = field(default_factory=list)  #: inputs whose output set this run wrote
    skipped: list[Path] = field(default_factory=list)  #: inputs kept, their outputs being complete
    failed: list[tuple[Path, str]] = field(default_factory=list)  #: inputs that failed, with the message
    cancelled: bool = False  #: ``should_stop`` ended the batch; files not reached are in no list


def plan_outputs(files: Sequence[Path], output_dir: Path, *, probabilities: bool = False,
                 overlay: bool = False) -> dict[Path, dict[str, Path]]:
    """The output files of each input: ``{input: {"labels": ..., "probabilities": ..., "overlay": ...}}``.

    Raises:
        SameOutputName: two inputs would write the same names (``a.png`` and ``a.tif``).
    """
    from ..io.images import output_stem

    plans: dict[Path, dict[str, Path]] = {}
    owner: dict[str, Path] = {}
    for f in files:
        stem = output_stem(f)
        if stem in owner:
            raise SameOutputName(owner[stem], f, stem)
        owner[stem] = f
        outputs = {"labels": output_dir / f"{stem}{OUTPUT_SUFFIXES[0]}"}
        if probabilities:
            outputs["probabilities"] = output_dir / f"{stem}{OUTPUT_SUFFIXES[1]}"
        if overlay:
            outputs["overlay"] = output_dir / f"{stem}{OUTPUT_SUFFIXES[2]}"
        plans[f] = outputs
    return plans


def tidy_output_folder(output_dir: Path) -> tuple[list[str], list[str]]:
    """Complete a set a killed run was naming; remove temporary files and work folders of dead runs.

    Returns:
        The names completed, and the names removed.
    """
    from ..io.output_sets import JOURNAL, folder_lock, remove_stale

    with folder_lock(output_dir) as completed:
        removed = remove_stale(output_dir, targets=lambda name: name.endswith(OUTPUT_SUFFIXES) or name == JOURNAL)
    return completed, removed


def check_outputs(plans: Mapping[Path, Mapping[str, Path]], *, skip_existing: bool = False) -> None:
    """Refuse planned outputs that exist (with ``skip_existing``: those that are not a complete or interrupted set).

    Raises:
        OutputsExist: naming them; nothing was written.
    """
    import os

    if skip_existing:
        clashes = [p for outputs in plans.values() for p in set_state(dict(outputs)).conflicting]
    else:
        clashes = [p for outputs in plans.values() for p in outputs.values() if os.path.lexists(p)]
    if clashes:
        raise OutputsExist(clashes, skip_existing)


def segment_file(path: Path, model: Any, options: Mapping[str, Any], workdir: str | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Generator[Progress, None, tuple[Any, Any]]:
    """Read one image file and segment it, yielding ``segment``'s progress.

    Args:
        options: ``segment`` keyword arguments (None values: the model's); ``axes`` None: the file's.
        workdir: a folder for memory-mapped arrays (large inputs); the file is then memory-mapped.

    Returns:
        The image read, and the ``Prediction``.

    Raises:
        ImageReadError, InputError, MemoryError, Cancelled: as ``read_image_with_axes`` and ``segment``.
    """
    from ..io.images import read_image_with_axes
    from .predict import segment

    image, file_axes = read_image_with_axes(path, memory_map=workdir is not None)
    kwargs = dict(options, axes=options.get("axes") or file_axes)
    prediction = yield from segment(image, model, workdir=workdir, should_stop=should_stop, **kwargs)
    return image, prediction


@contextlib.contextmanager
def work_folder(path: Path, output_dir: Path, low_memory: bool, limit: int = LOW_MEMORY_FILE_BYTES) -> Iterator[
        str | None]:
    """A hidden, locked work folder in ``output_dir`` for a low-memory run (removed afterwards), else None."""
    from ..io.output_sets import claimed_folder

    try:
        large = path.stat().st_size > limit
    except OSError:
        large = False  # reading the file reports the problem
    if not (low_memory or large):
        yield None
        return
    # In the output folder, not /tmp: it is where the user expects disk to be used, and /tmp is
    # often RAM. Locked while in use, so that a later run removes it only if this process died.
    with claimed_folder(output_dir) as folder:
        yield folder


def predict_files(files: Sequence[Path], output_dir: str | Path, model: Any, *,
                  options: Mapping[str, Any] | None = None, model_source: str = "", overwrite: bool = False,
                  skip_existing: bool = False, probabilities: bool = False, overlay: bool = False,
                  low_memory: bool = False, low_memory_bytes: int = LOW_MEMORY_FILE_BYTES,
                  should_stop: Callable[[], bool] | None = None
                  ) -> Generator[BatchProgress, None, BatchResult]:
    """Segment image files into ``output_dir``: ``<stem>_labels.tif`` (and ``_prob.tif``, ``_overlay.png``) each.

    Outputs are planned and checked before the model is used; each file's set is written whole or
    not at all; a file that fails is reported (an ``"images"`` event with outcome ``"failed"``)
    and the others go on.

    Args:
        files: image files (``io.images.list_images`` expands folders and patterns).
        output_dir: the folder for the results (created).
        model: a loaded model, or a function without arguments that loads one: it is called once
            the outputs are checked, so that a clash is reported before a slow load.
        options: ``segment`` keyword arguments (``axes``, ``channel``, ``threshold``, ``instances``,
            ``min_size``, ``stitch_threshold``, ``mode``, ``tile_size``, ``batch_size``); missing or
            None: the model's value (``axes``: the file's).
        model_source: how the model was named (written into each file's settings).
        overwrite: replace existing outputs.
        skip_existing: keep inputs whose outputs are complete, redo those missing or interrupted.
        probabilities: also write ``<stem>_prob.tif`` (float32).
        overlay: also write ``<stem>_overlay.png`` (labels drawn on the image; 2D images only).
        low_memory: memory-map inputs and intermediate maps in a work folder in ``output_dir``
            (automatic for files over ``low_memory_bytes``).
        should_stop: called before each file and each batch of tiles; True ends the batch
            (``BatchResult.cancelled``): the file in progress writes nothing.

    Returns:
        A ``BatchResult``.

    Raises:
        SettingsError: ``overwrite`` with ``skip_existing``, or ``output_dir`` is a file.
        SameOutputName, OutputsExist: before anything is written.
        Whatever loading the model raises.
    """
    from .. import __version__
    from ..io.images import ImageReadError
    from .predict import Cancelled
    from .preprocess import InputError

    if overwrite and skip_existing:
        raise SettingsError("overwrite and skip existing cannot be combined: overwrite redoes every input, "
                            "skip existing keeps complete outputs; give one")
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise SettingsError(f"output folder {output_dir} is a file; give a folder")
    files = list(files)
    count = len(files)
    plans = plan_outputs(files, output_dir, probabilities=probabilities, overlay=overlay)
    if output_dir.is_dir():
        completed, removed = tidy_output_folder(output_dir)
        if completed:
            yield BatchProgress("tidy", 0, count, f"completed the output set that an interrupted run was writing "
                                                  f"({', '.join(completed)})")
        if removed:
            yield BatchProgress("tidy", 0, count, f"removed {len(removed)} temporary file(s) or folder(s) left in "
                                                  f"{output_dir} by interrupted runs")
    if not overwrite:
        check_outputs(plans, skip_existing=skip_existing)
    if _is_loader(model):
        yield BatchProgress("model", 0, 1, "loading model", count=count)
        model = model()
    options = dict(options or {})
    result = BatchResult()

    def finished(index: int, message: str, f: Path, outcome: str) -> BatchProgress:
        return BatchProgress("images", index, count, message, file=f, index=index, count=count, outcome=outcome)

    for index, f in enumerate(files, 1):
        if should_stop is not None and should_stop():
            result.cancelled = True
            break
        outputs = plans[f]
        if skip_existing and set_state(outputs).kind == "complete":
            result.skipped.append(f)
            yield finished(index, f"{f.name}: kept, its outputs being complete", f, "skipped")
            continue
        try:
            with work_folder(f, output_dir, low_memory, low_memory_bytes) as workdir:
                events = segment_file(f, model, options, workdir, should_stop)
                image, prediction = yield from _about(events, f, index, count)
                settings = dict(prediction.settings, source=f.name, model_source=model_source,
                                software=f"napari-litenext {__version__}")
                if "overlay" in outputs and not draws_overlay(prediction.labels):
                    yield BatchProgress("note", index - 1, count, f"no overlay for stack "
                                        f"{outputs['labels'].name[:-len(OUTPUT_SUFFIXES[0])]} (overlays are drawn "
                                        "for 2D images only)", file=f, index=index, count=count)
                wrote = write_output_set(f, outputs, image, prediction, settings, overwrite=overwrite,
                                         skip_existing=skip_existing)
                del image, prediction  # release the memory maps before their folder is removed
        except Cancelled:
            result.cancelled = True
            break
        except (ImageReadError, InputError, MemoryError, OSError, OutputTaken) as exc:
            # OSError: an output could not be written (disk full, permissions); the others may be
            text = str(exc) or ("not enough memory" if isinstance(exc, MemoryError) else type(exc).__name__)
            text = text if str(f) in text else f"{f}: {text}"
            result.failed.append((f, text))
            yield finished(index, text, f, "failed")
            continue
        if wrote:
            result.written.append(f)
            yield finished(index, f"{f.name}: written", f, "written")
        else:  # skip_existing: another run completed it meanwhile
            result.skipped.append(f)
            yield finished(index, f"{f.name}: kept, another run completed its outputs", f, "skipped")
    return result


def _is_loader(model: Any) -> bool:
    # a model is callable too (torch modules): only plain functions are loaders
    return inspect.isfunction(model) or inspect.ismethod(model) or isinstance(model, functools.partial)


def _about(events: Generator[Progress, None, Any], f: Path, index: int, count: int) -> Generator[
        BatchProgress, None, Any]:
    """``segment``'s events, marked with the file they are about."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        yield BatchProgress(event.stage, event.done, event.total, f"{f.name}: {event.message}" if event.message
                            else f.name, file=f, index=index, count=count)
