"""``napari-litenext predict``: segment image files, one label TIFF per input.

All outputs are planned and checked before any work starts (an existing file is never replaced
without ``--overwrite``), each file is written atomically, and an input that cannot be read or
segmented is reported on one line while the others go on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from ..config import MODES
from . import predict_scale
from ..network.registry import DEFAULT_MODEL

__all__ = ["add_parser", "run", "DEFAULT_MODEL", "LOW_MEMORY_FILE_BYTES"]

#: Input files larger than this are segmented as with ``--low-memory``.
LOW_MEMORY_FILE_BYTES = 1 << 30


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help="segment images; writes <name>_labels.tif per input",
        description="Segment image files with a LiteNeXt model. Writes <name>_labels.tif for each "
                    "input (label image; settings as JSON in the TIFF description), optionally "
                    "<name>_prob.tif and <name>_overlay.png. Existing files are kept unless --overwrite.")
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
    p.add_argument("--channel", type=int, help="channel to segment in multichannel images (0-based)")
    p.add_argument("--axes", help="axes of the images, e.g. YX, YXC, CYX, ZYX, TYX, ZCYX (default: inferred)")
    p.add_argument("--mode", choices=MODES, help="tile: native resolution; resize: whole image at the "
                                                 "model's input size (default: the model's)")
    p.add_argument("--tile-size", type=int, metavar="PIXELS",
                   help="tile edge for --mode tile (multiple of 16; default: the model's)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per network call (default: 8)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--probabilities", action="store_true", help="also write <name>_prob.tif (float32)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png (labels drawn on the image; 2D images only)")
    p.add_argument("--low-memory", action="store_true",
                   help="for images larger than RAM: read uncompressed TIFFs memory-mapped and keep the "
                        "probability map and labels in temporary files in --output (automatic for "
                        "inputs over 1 GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
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
    files = list_images(args.inputs)
    outdir = Path(args.output).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise CliError(f"--output {outdir} is a file; give a folder")
    plans = _plan_outputs(files, outdir, args, CliError)
    if not args.overwrite:
        clashes = [p for outputs in plans.values() for p in outputs.values() if p.exists()]
        if clashes:
            more = f" and {len(clashes) - 4} more" if len(clashes) > 4 else ""
            shown = ", ".join(str(p) for p in clashes[:4]) + more
            raise CliError(f"{len(clashes)} output file(s) already exist ({shown}); "
                           "pass --overwrite to replace them or choose another --output")
    model, model_name = _load(args, CliError)
    return _run_all(files, plans, model, model_name, args)


def _check_numbers(args: argparse.Namespace, CliError: type) -> None:
    from ..config import check_inference_settings

    # Bad values are refused before any file is read or model loaded; the model's values fill the rest.
    check_inference_settings(threshold=args.threshold, min_size=args.min_size, tile_size=args.tile_size,
                             instances=args.instances, mode=args.mode)
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
        outputs = {"labels": outdir / f"{stem}_labels.tif"}
        if args.probabilities:
            outputs["probabilities"] = outdir / f"{stem}_prob.tif"
        if args.overlay:
            outputs["overlay"] = outdir / f"{stem}_overlay.png"
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
        model = load_model(source, device=args.device)
    except ValueError as exc:  # device errors; CheckpointError is a ValueError too and passes through
        from ..network.checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            raise
        raise CliError(str(exc)) from None
    return model, str(source)


def _run_all(files: list[Path], plans: dict[Path, dict[str, Path]], model, model_name: str,
             args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import __version__
    from ..io.images import ImageReadError
    from ..inference.preprocess import InputError

    failures: list[Path] = []
    outer = not args.quiet and len(files) > 1
    bar = tqdm(files, desc="images", unit="image", file=sys.stderr, disable=not outer, position=0,
               dynamic_ncols=True)
    for f in bar:
        try:
            with _workdir(f, args) as workdir:
                image, prediction = _segment_one(f, model, args, position=1 if outer else 0, workdir=workdir)
                settings = dict(prediction.settings, source=f.name, model_source=model_name,
                                software=f"napari-litenext {__version__}")
                _write_outputs(plans[f], image, prediction, settings, args)
                del image, prediction  # release the memory maps before their folder is removed
        except (ImageReadError, InputError, MemoryError, OSError) as exc:
            # OSError: an output could not be written (disk full, permissions); the others may be
            failures.append(f)
            text = str(exc) or ("not enough memory" if isinstance(exc, MemoryError) else type(exc).__name__)
            tqdm.write(f"napari-litenext: error: {text if str(f) in text else f'{f}: {text}'}", file=sys.stderr)
    bar.close()
    done = len(files) - len(failures)
    if not args.quiet:
        print(f"napari-litenext: segmented {done} of {len(files)} image(s) into {args.output}", file=sys.stderr)
    if failures:
        names = ", ".join(p.name for p in failures[:10]) + (" ..." if len(failures) > 10 else "")
        print(f"napari-litenext: error: {len(failures)} of {len(files)} input(s) failed: {names}",
              file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _workdir(path: Path, args: argparse.Namespace):
    """A hidden temporary folder in --output for a low-memory run (removed afterwards), else None."""
    try:
        large = path.stat().st_size > LOW_MEMORY_FILE_BYTES
    except OSError:
        large = False  # reading the file reports the problem
    if not (args.low_memory or large):
        yield None
        return
    outdir = Path(args.output).expanduser()
    outdir.mkdir(parents=True, exist_ok=True)
    # In --output, not /tmp: it is where the user expects disk to be used, and /tmp is often RAM.
    with tempfile.TemporaryDirectory(prefix=".litenext-work-", dir=outdir) as folder:
        yield folder


def _segment_one(path: Path, model, args: argparse.Namespace, position: int = 0, workdir: str | None = None):
    from tqdm import tqdm

    from ..inference.predict import segment
    from ..io.images import read_image_with_axes
    from ..progress import run_to_end

    image, file_axes = read_image_with_axes(path, memory_map=workdir is not None)
    axes = args.axes or file_axes
    gen = segment(image, model, axes=axes, channel=args.channel, threshold=args.threshold,
                  instances=args.instances, min_size=args.min_size, mode=args.mode,
                  tile_size=args.tile_size, batch_size=args.batch_size, workdir=workdir)
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


def _write_outputs(outputs: dict[str, Path], image, prediction, settings: dict,
                   args: argparse.Namespace) -> None:
    """Write every output of one input; if one fails, remove those already written for it."""
    from ..io.images import write_png, write_tiff
    from ..inference.postprocess import overlay

    written: list[Path] = []
    try:
        written.append(write_tiff(outputs["labels"], prediction.labels, metadata=settings,
                                  overwrite=args.overwrite))
        if "probabilities" in outputs:
            # float maps gain little from zlib and are slow to compress when huge
            written.append(write_tiff(outputs["probabilities"], prediction.probabilities, metadata=settings,
                                      overwrite=args.overwrite, compress=False))
        if "overlay" in outputs:
            if prediction.labels.ndim != 2:
                from tqdm import tqdm

                tqdm.write(f"napari-litenext: note: no overlay for stack {outputs['labels'].name[:-11]} "
                           f"(overlays are drawn for 2D images only)", file=sys.stderr)
            else:
                picture = overlay(_display_image(image, settings), prediction.labels)
                written.append(write_png(outputs["overlay"], picture, overwrite=args.overwrite))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


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
