"""``napari-litenext predict``: segment image files, one label TIFF per input.

The argparse front end of ``inference.batch.predict_files``, which does the work (the Segment
widget's folder source runs the same generator): outputs are planned and checked before any work
starts (an existing file is never replaced without ``--overwrite``), and an input that cannot be
read or segmented is reported on one line while the others go on; the exit status is then 1.

An image's files (labels, and probabilities and overlay when asked for) are its output set,
named together or not at all (``inference.batch_outputs``): another run sees all of them or none,
a name that another run took meanwhile is never replaced, and nothing is ever removed that this
run did not write. A kill leaves an image with no files or a complete set plus hidden leftovers
that the next run removes; ``--skip-existing`` tells complete sets from interrupted or foreign files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import MODES
from ..inference.batch import LOW_MEMORY_FILE_BYTES
from . import predict_scale
from ..network.registry import DEFAULT_MODEL

__all__ = ["add_parser", "run", "DEFAULT_MODEL", "LOW_MEMORY_FILE_BYTES"]

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
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help="adapt post-processing to the objects in each image; --no-adaptive for the fixed rules "
                        "(default: the model's)")
    p.add_argument("--object-size", metavar="auto|PIXELS",
                   help="typical object diameter in pixels in the images, so that they are rescaled to the object "
                        "size the model was trained at (tile mode); auto estimates it from a first pass; 0 = off, "
                        "native scale (default: the model's)")
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
    from ..inference.batch import predict_files
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
    job = predict_files(files, outdir, lambda: _load(args, CliError)[0], options=segment_options(args),
                        model_source=str(args.model or DEFAULT_MODEL), overwrite=args.overwrite,
                        skip_existing=args.skip_existing, probabilities=args.probabilities, overlay=args.overlay,
                        low_memory=args.low_memory, low_memory_bytes=LOW_MEMORY_FILE_BYTES)
    with _Bars(args.quiet, len(files)) as bars:
        result = _as_cli_errors(job, bars.show, args, CliError)
    if not args.quiet:
        kept = f"; {len(result.skipped)} kept, their outputs being complete" if result.skipped else ""
        print(f"napari-litenext: segmented {len(result.written)} of {len(files)} image(s) into {args.output}{kept}",
              file=sys.stderr)
    if result.failed:
        names = ", ".join(p.name for p, _ in result.failed[:10]) + (" ..." if len(result.failed) > 10 else "")
        print(f"napari-litenext: error: {len(result.failed)} of {len(files)} input(s) failed: {names}",
              file=sys.stderr)
        return 1
    return 0


def _as_cli_errors(job: Any, show: Any, args: argparse.Namespace, CliError: type) -> Any:
    """Run the batch; its refusals of existing outputs are reported in the options' words."""
    from ..inference.batch import OutputsExist, SameOutputName
    from ..progress import run_to_end

    try:
        return run_to_end(job, show)
    except SameOutputName as exc:
        raise CliError(_same_name_message(exc)) from None
    except OutputsExist as exc:
        raise CliError(_clash_message(exc.paths, args.skip_existing)) from None


class _Bars:
    """tqdm bars: one over the images (several files), one for the file being segmented; notes and errors."""

    def __init__(self, quiet: bool, count: int) -> None:
        self.quiet, self.count, self.outer = quiet, count, not quiet and count > 1
        self.images: Any = None  # opened with the first image, so that loading errors come alone
        self.file_bar: Any = None
        self.stage = ""

    def show(self, event: Any) -> None:
        from tqdm import tqdm

        if event.stage == "tidy":
            if not self.quiet:
                print(f"napari-litenext: note: {event.message}", file=sys.stderr)
        elif event.stage == "note":
            tqdm.write(f"napari-litenext: note: {event.message}", file=sys.stderr)
        elif event.stage == "images":
            self._close_file_bar()
            if event.outcome == "failed":
                tqdm.write(f"napari-litenext: error: {event.message}", file=sys.stderr)
            self._images().update(event.done - self.images.n)
        elif event.file is not None:
            self._images()
            self._file_event(event)

    def _images(self) -> Any:
        from tqdm import tqdm

        if self.images is None:
            self.images = tqdm(total=self.count, desc="images", unit="image", file=sys.stderr,
                               disable=not self.outer, position=0, dynamic_ncols=True)
        return self.images

    def _file_event(self, event: Any) -> None:
        from tqdm import tqdm

        name = event.file.name
        if self.file_bar is None:
            self.file_bar = tqdm(desc=name, unit="step", file=sys.stderr, disable=self.quiet,
                                 position=1 if self.outer else 0, leave=False, dynamic_ncols=True)
            self.stage = ""
        if event.stage != self.stage:
            self.stage = event.stage
            self.file_bar.reset(total=event.total)
            self.file_bar.set_description(f"{name} {event.stage}")
        self.file_bar.n = event.done
        self.file_bar.refresh()

    def _close_file_bar(self) -> None:
        if self.file_bar is not None:
            self.file_bar.close()
            self.file_bar = None

    def __enter__(self) -> "_Bars":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_file_bar()
        if self.images is not None:
            self.images.close()


def _clash_message(clashes: list[Path], skip_existing: bool) -> str:
    if skip_existing:
        why = "exist and are neither complete outputs for these options nor outputs a killed run left incomplete"
        fix = "pass --overwrite to replace them or choose another --output"
    else:
        why = "already exist"
        fix = ("pass --overwrite to replace them, --skip-existing to keep complete outputs and do the rest, "
               "or choose another --output")
    more = f" and {len(clashes) - 4} more" if len(clashes) > 4 else ""
    shown = ", ".join(str(p) for p in clashes[:4]) + more
    return f"{len(clashes)} output file(s) {why} ({shown}); {fix}"


def _refuse_clashes(plans: dict[Path, dict[str, Path]], args: argparse.Namespace, CliError: type) -> None:
    from ..inference.batch import OutputsExist, check_outputs

    try:
        check_outputs(plans, skip_existing=args.skip_existing)
    except OutputsExist as exc:
        raise CliError(_clash_message(exc.paths, args.skip_existing)) from None


def segment_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``segment`` keyword arguments the options give (None: the model's value)."""
    return dict(axes=args.axes, channel=args.channel, threshold=args.threshold, instances=args.instances,
                min_size=args.min_size, stitch_threshold=args.stitch_threshold, adaptive=args.adaptive,
                object_size=args.object_size, mode=args.mode,
                tile_size=args.tile_size, batch_size=args.batch_size)


def _check_numbers(args: argparse.Namespace, CliError: type) -> None:
    from ..config import check_inference_settings

    # Bad values are refused before any file is read or model loaded; the model's values fill the rest.
    options = segment_options(args)
    check_inference_settings(**{k: options[k] for k in ("threshold", "min_size", "tile_size", "instances", "mode",
                                                        "stitch_threshold", "adaptive", "object_size")})
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")


def _plan_outputs(files: list[Path], outdir: Path, args: argparse.Namespace,
                  CliError: type) -> dict[Path, dict[str, Path]]:
    from ..inference.batch import SameOutputName, plan_outputs

    try:
        return plan_outputs(files, outdir, probabilities=args.probabilities, overlay=args.overlay)
    except SameOutputName as exc:
        raise CliError(_same_name_message(exc)) from None


def _same_name_message(exc: Any) -> str:
    return (f"{exc.first} and {exc.second} would both write {exc.stem}_labels.tif; "
            "segment them into different --output folders or rename one")


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


def _segment_one(path: Path, model, args: argparse.Namespace, position: int = 0, workdir: str | None = None):
    """Read and segment one file with a progress bar (a cluster task's step); the image and the Prediction."""
    from tqdm import tqdm

    from ..inference.batch import segment_file
    from ..progress import run_to_end

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
        return run_to_end(segment_file(path, model, segment_options(args), workdir), show)
    finally:
        bar.close()
