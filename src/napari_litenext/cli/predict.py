"""``napari-litenext predict``: segment image files, one label TIFF per input.

All outputs are planned and checked before any work starts (an existing file is never replaced
without ``--overwrite``), and an input that cannot be read or segmented is reported on one line
while the others go on; the exit status is then 1.

An image's files (labels, and probabilities and overlay when asked for) are its output set. They
are written under hidden temporary names and flushed to the disk, then named together while the
output folder is locked (``io.files.publish``): another run sees all of them or none, a name that
another run took meanwhile is never replaced (the kernel decides, when the name is taken), and
nothing is ever removed that this run did not write. A kill leaves an image with no files or a
complete set (the next run into the folder completes a set whose naming was cut short) plus
hidden leftovers that the next run removes. Each file records its set (``output_set`` in its
metadata), which is how ``--skip-existing`` tells complete sets from interrupted or foreign files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import MODES
from ..errors import LiteNeXtError
from . import predict_scale
from ..network.registry import DEFAULT_MODEL

__all__ = ["add_parser", "run", "DEFAULT_MODEL", "LOW_MEMORY_FILE_BYTES"]

#: Input files larger than this are segmented as with ``--low-memory``.
LOW_MEMORY_FILE_BYTES = 1 << 30
# name endings of the labels, probabilities and overlay
_SUFFIXES = ("_labels.tif", "_prob.tif", "_overlay.png")
# PNG text chunk of an overlay holding the settings (a TIFF holds them in its description)
_PNG_KEY = "napari-litenext"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help="segment images; writes <name>_labels.tif per input",
        description="Segment image files with a LiteNeXt model. Writes <name>_labels.tif for each "
                    "input (label image; settings as JSON in the TIFF description), optionally "
                    "<name>_prob.tif and <name>_overlay.png. Existing files are kept unless --overwrite; "
                    "--skip-existing finishes an interrupted batch.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, glob patterns or folders")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the results (created)")
    p.add_argument("-m", "--model", metavar="NAME_OR_PATH",
                   help=f"bundled model name or checkpoint file (default: {DEFAULT_MODEL!r} if bundled)")
    p.add_argument("--threshold", type=float, help="foreground probability threshold (default: the model's)")
    p.add_argument("--instances", action=argparse.BooleanOptionalAction, default=None,
                   help="number each object, splitting touching ones (int32 labels); --no-instances for a "
                        "0/1 mask (default: the model's)")
    p.add_argument("--min-size", type=int, metavar="PIXELS",
                   help="remove objects smaller than this (default: the model's)")
    p.add_argument("--stitch-threshold", type=float, metavar="IOU",
                   help="with instances, give an object the id of the one in the previous Z slice it overlaps "
                        "with at least this IoU, so each nucleus keeps one id through a stack (0 = off; "
                        "default: the model's)")
    p.add_argument("--channel", type=int, help="channel to segment in multichannel images (0-based)")
    p.add_argument("--axes", help="axes of the images, e.g. YX, YXC, CYX, ZYX, TYX, ZCYX (default: inferred)")
    p.add_argument("--mode", choices=MODES, help="tile: native resolution; resize: whole image at the "
                                                 "model's input size (default: the model's)")
    p.add_argument("--tile-size", type=int, metavar="PIXELS",
                   help="tile edge for --mode tile (multiple of 16; default: the model's)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per network call (default: 8)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="what runs the network: torch (default), or ONNX Runtime (CPU) for a .onnx file, a "
                        "package or any model (converted to ONNX in memory first)")
    p.add_argument("--probabilities", action="store_true", help="also write <name>_prob.tif (float32)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png (labels drawn on the image; 2D images only)")
    p.add_argument("--low-memory", action="store_true",
                   help="for images larger than RAM: read uncompressed TIFFs memory-mapped and keep the "
                        "probability map and labels in temporary files in --output (automatic for "
                        "inputs over 1 GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--skip-existing", action="store_true",
                   help="finish an interrupted batch: keep inputs whose outputs are complete, redo those "
                        "whose outputs are missing or incomplete")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    predict_scale.add_arguments(p)  # zarr inputs, --workers, --scheduler
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; returns 0, or 1 when some inputs failed (each reported on one line)."""
    from . import CliError
    from ..io.images import list_images

    _check_numbers(args, CliError)
    if predict_scale.wants(args):
        return predict_scale.run(args)
    if args.overwrite and args.skip_existing:
        raise CliError("--overwrite and --skip-existing cannot be combined: --overwrite redoes every input, "
                       "--skip-existing keeps complete outputs; give one")
    files = list_images(args.inputs)
    outdir = Path(args.output).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise CliError(f"--output {outdir} is a file; give a folder")
    plans = _plan_outputs(files, outdir, args, CliError)
    if outdir.is_dir():
        _tidy(outdir, args)
    if not args.overwrite:
        _refuse_clashes(plans, args, CliError)
    model, model_name = _load(args, CliError)
    return _run_all(files, plans, model, model_name, args)


def _tidy(outdir: Path, args: argparse.Namespace) -> None:
    """Complete a set a killed run was naming; remove temporary files and work folders of dead runs."""
    from ..io.files import folder_lock, remove_stale

    with folder_lock(outdir) as completed:
        removed = remove_stale(outdir, targets=_is_output_name)
    if args.quiet:
        return
    if completed:
        print(f"napari-litenext: note: completed the output set that an interrupted run was writing "
              f"({', '.join(completed)})", file=sys.stderr)
    if removed:
        print(f"napari-litenext: note: removed {len(removed)} temporary file(s) or folder(s) left in "
              f"{outdir} by interrupted runs", file=sys.stderr)


def _is_output_name(name: str) -> bool:
    from ..io.files import JOURNAL

    return name.endswith(_SUFFIXES) or name == JOURNAL


def _refuse_clashes(plans: dict[Path, dict[str, Path]], args: argparse.Namespace, CliError: type) -> None:
    if args.skip_existing:
        clashes = [p for outputs in plans.values() for p in _set_state(outputs).conflicting]
        why = "exist and are neither complete outputs for these options nor outputs a killed run left incomplete"
        fix = "pass --overwrite to replace them or choose another --output"
    else:
        clashes = [p for outputs in plans.values() for p in outputs.values() if os.path.lexists(p)]
        why = "already exist"
        fix = ("pass --overwrite to replace them, --skip-existing to keep complete outputs and do the rest, "
               "or choose another --output")
    if clashes:
        more = f" and {len(clashes) - 4} more" if len(clashes) > 4 else ""
        shown = ", ".join(str(p) for p in clashes[:4]) + more
        raise CliError(f"{len(clashes)} output file(s) {why} ({shown}); {fix}")


def segment_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``segment`` keyword arguments the options give (None: the model's value)."""
    return dict(axes=args.axes, channel=args.channel, threshold=args.threshold, instances=args.instances,
                min_size=args.min_size, stitch_threshold=args.stitch_threshold, mode=args.mode,
                tile_size=args.tile_size, batch_size=args.batch_size)


def _check_numbers(args: argparse.Namespace, CliError: type) -> None:
    from ..config import check_inference_settings

    # Bad values are refused before any file is read or model loaded; the model's values fill the rest.
    options = segment_options(args)
    check_inference_settings(**{k: options[k] for k in ("threshold", "min_size", "tile_size", "instances", "mode",
                                                        "stitch_threshold")})
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")


def _plan_outputs(files: list[Path], outdir: Path, args: argparse.Namespace,
                  CliError: type) -> dict[Path, dict[str, Path]]:
    from ..io.images import output_stem

    plans: dict[Path, dict[str, Path]] = {}
    owner: dict[str, Path] = {}
    for f in files:
        stem = output_stem(f)
        if stem in owner:
            raise CliError(f"{owner[stem]} and {f} would both write {stem}_labels.tif; "
                           "segment them into different --output folders or rename one")
        owner[stem] = f
        outputs = {"labels": outdir / f"{stem}{_SUFFIXES[0]}"}
        if args.probabilities:
            outputs["probabilities"] = outdir / f"{stem}{_SUFFIXES[1]}"
        if args.overlay:
            outputs["overlay"] = outdir / f"{stem}{_SUFFIXES[2]}"
        plans[f] = outputs
    return plans


def _load(args: argparse.Namespace, CliError: type):
    from ..network.registry import bundled_models, load_model

    source = args.model
    if source is None:
        models = bundled_models()
        if DEFAULT_MODEL not in models:
            names = ", ".join(models) if models else "none installed"
            raise CliError(f"no bundled {DEFAULT_MODEL!r} model (bundled: {names}); pass --model "
                           "NAME_OR_PATH, e.g. a checkpoint written by napari-litenext train")
        source = DEFAULT_MODEL
    try:
        model = _onnx_model(source) if args.backend == "onnxruntime" else load_model(source, device=args.device)
    except ValueError as exc:  # device errors; CheckpointError is a ValueError too and passes through
        from ..network.checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            raise
        raise CliError(str(exc)) from None
    return model, str(source)


def _onnx_model(source: str):
    """An ``OnnxModel`` of ``source``: an ONNX file or package as it is, any other model exported first."""
    import tempfile

    from ..exchange import export_onnx, load_onnx
    from ..exchange.package import is_package_path

    if str(source).lower().endswith(".onnx") or is_package_path(Path(source)):
        return load_onnx(source)
    with tempfile.TemporaryDirectory(prefix="litenext-onnx-") as folder:
        return load_onnx(export_onnx(source, Path(folder) / "model.onnx"))


class OutputTaken(LiteNeXtError):
    """Another run took an output name of this image meanwhile; nothing of the image was kept."""


def _run_all(files: list[Path], plans: dict[Path, dict[str, Path]], model, model_name: str,
             args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import __version__
    from ..io.images import ImageReadError
    from ..inference.preprocess import InputError

    failures: list[Path] = []
    skipped: list[Path] = []
    outer = not args.quiet and len(files) > 1
    bar = tqdm(files, desc="images", unit="image", file=sys.stderr, disable=not outer, position=0,
               dynamic_ncols=True)
    for f in bar:
        if args.skip_existing and _set_state(plans[f]).kind == "complete":
            skipped.append(f)
            continue
        try:
            with _workdir(f, args) as workdir:
                image, prediction = _segment_one(f, model, args, position=1 if outer else 0, workdir=workdir)
                settings = dict(prediction.settings, source=f.name, model_source=model_name,
                                software=f"napari-litenext {__version__}")
                if not _write_outputs(f, plans[f], image, prediction, settings, args):
                    skipped.append(f)  # --skip-existing: another run completed it meanwhile
                del image, prediction  # release the memory maps before their folder is removed
        except (ImageReadError, InputError, MemoryError, OSError, OutputTaken) as exc:
            # OSError: an output could not be written (disk full, permissions); the others may be
            failures.append(f)
            text = str(exc) or ("not enough memory" if isinstance(exc, MemoryError) else type(exc).__name__)
            tqdm.write(f"napari-litenext: error: {text if str(f) in text else f'{f}: {text}'}", file=sys.stderr)
    bar.close()
    done = len(files) - len(failures) - len(skipped)
    if not args.quiet:
        kept = f"; {len(skipped)} kept, their outputs being complete" if skipped else ""
        print(f"napari-litenext: segmented {done} of {len(files)} image(s) into {args.output}{kept}",
              file=sys.stderr)
    if failures:
        names = ", ".join(p.name for p in failures[:10]) + (" ..." if len(failures) > 10 else "")
        print(f"napari-litenext: error: {len(failures)} of {len(files)} input(s) failed: {names}",
              file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _workdir(path: Path, args: argparse.Namespace):
    """A hidden, locked work folder in --output for a low-memory run (removed afterwards), else None."""
    from ..io.files import claimed_folder

    try:
        large = path.stat().st_size > LOW_MEMORY_FILE_BYTES
    except OSError:
        large = False  # reading the file reports the problem
    if not (args.low_memory or large):
        yield None
        return
    # In --output, not /tmp: it is where the user expects disk to be used, and /tmp is often RAM.
    # Locked while in use, so that a later run removes it only if this process died.
    with claimed_folder(Path(args.output).expanduser()) as folder:
        yield folder


def _segment_one(path: Path, model, args: argparse.Namespace, position: int = 0, workdir: str | None = None):
    from tqdm import tqdm

    from ..inference.predict import segment
    from ..io.images import read_image_with_axes
    from ..progress import run_to_end

    image, file_axes = read_image_with_axes(path, memory_map=workdir is not None)
    axes = args.axes or file_axes
    gen = segment(image, model, **dict(segment_options(args), axes=axes), workdir=workdir)
    bar = tqdm(desc=path.name, unit="step", file=sys.stderr, disable=args.quiet, position=position, leave=False,
               dynamic_ncols=True)
    stage: list[str] = []

    def show(event) -> None:
        if not stage or event.stage != stage[-1]:
            stage.append(event.stage)
            bar.reset(total=event.total)
            bar.set_description(f"{path.name} {event.stage}")
        bar.n = event.done
        bar.refresh()

    try:
        return image, run_to_end(gen, show)
    finally:
        bar.close()


def _write_outputs(source: Path, outputs: dict[str, Path], image, prediction, settings: dict,
                   args: argparse.Namespace) -> bool:
    """Write the output set of one input, all files or none (see the module's docstring).

    Returns:
        False when ``--skip-existing`` found the set completed by another run meanwhile (this
        run's files are dropped), else True.

    Raises:
        OutputTaken: without ``--overwrite``, another run took a name meanwhile; nothing was kept.
        OSError: a file could not be written (full disk ...); nothing was kept.
    """
    from ..io.files import folder_lock
    from ..io.images import stage_png, stage_tiff
    from ..inference.postprocess import overlay

    kinds = list(outputs)
    if "overlay" in outputs and prediction.labels.ndim != 2:
        from tqdm import tqdm

        kinds.remove("overlay")
        tqdm.write(f"napari-litenext: note: no overlay for stack {outputs['labels'].name[:-11]} "
                   f"(overlays are drawn for 2D images only)", file=sys.stderr)
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
                    picture = overlay(_display_image(image, settings), prediction.labels)
                    staged.append(stage_png(path, picture, text={_PNG_KEY: json.dumps(meta, sort_keys=True)}))
            except OSError as exc:
                raise _write_error(source, path, exc) from None
        with folder_lock(outputs["labels"].parent):
            return _claim(source, outputs, staged, args)
    finally:
        for s in staged:
            s.discard()


def _claim(source: Path, outputs: dict[str, Path], staged: list, args: argparse.Namespace) -> bool:
    """Name the staged files as the options say; called with the output folder locked."""
    from ..io.files import publish

    if args.overwrite:
        publish(staged, replace=True)
        return True
    replace: list[Path] = []
    if args.skip_existing:
        state = _set_state(outputs)
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
class _SetState:
    """What is on disk under an input's planned output names."""

    kind: str  #: "absent", "complete", "interrupted" (files of a set whose naming did not finish) or "conflict"
    present: list[Path] = field(default_factory=list)  #: planned names that exist

    @property
    def conflicting(self) -> list[Path]:
        return self.present if self.kind == "conflict" else []


_LEGACY = "legacy"  # an output of predict from before output sets were recorded


def _set_state(outputs: dict[str, Path]) -> _SetState:
    """Whether the planned files are absent, a complete set, an interrupted set, or something else.

    Complete: the labels file and every planned file of its set are present, readable (headers and
    data extents checked) and of that one set, and the set was planned with at least these files.
    Interrupted: every present file belongs to one set, some of whose files are missing.
    Files from an older version count as complete when all planned files are present and readable.
    """
    present = [p for p in outputs.values() if os.path.lexists(p)]
    if not present:
        return _SetState("absent")
    info = {p: _set_info(p) for p in present}
    names = {p.name for p in outputs.values()}
    if len(present) == len(outputs) and all(i == _LEGACY for i in info.values()):
        return _SetState("complete", present)
    labels = info.get(outputs["labels"])
    if isinstance(labels, dict) and names <= set(labels["planned"]):
        members = [p for p in outputs.values() if p.name in labels["files"]]
        if all(isinstance(info.get(p), dict) and info[p]["id"] == labels["id"] for p in members):
            return _SetState("complete", present)
    ids = {i["id"] if isinstance(i, dict) else None for i in info.values()}
    if len(ids) == 1 and None not in ids:
        one = next(iter(info.values()))
        folder = outputs["labels"].parent
        if not all(os.path.lexists(folder / n) for n in one["files"]):
            return _SetState("interrupted", present)
    return _SetState("conflict", present)


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


def _display_image(image, settings: dict, rows_per_chunk: int = 1024):
    """The segmented pixels as uint8 (grayscale or RGB), scaled by the model's intensity range."""
    import numpy as np

    from ..inference.preprocess import apply_range, select_channels

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
