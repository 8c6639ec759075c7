"""``napari-litenext predict`` for zarr inputs and clusters: ``.zarr`` in, zarr out; ``--workers``/``--scheduler``.

* A ``.zarr`` input (a plain array or an OME-Zarr image) is read lazily and its labels written to
  ``<output>/<name>_labels.zarr`` (standalone OME-Zarr labels with a pyramid), or with
  ``--into-image`` as an NGFF labels group inside the OME-Zarr image (``<image>/labels/litenext``).
* ``--workers N`` starts a dask LocalCluster of N processes (``--threads-per-worker`` each);
  ``--scheduler ADDRESS`` uses a running cluster (dask-jobqueue on SLURM, Kubernetes, ...). Image
  files are then one task each; each zarr input is segmented in blocks over the cluster, and a
  killed run started again resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "wants", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of this module, on ``predict``'s parser."""
    p.add_argument("--workers", type=int, metavar="N",
                   help="segment on a local dask cluster of N worker processes (image files: one task each; "
                        "zarr inputs: in blocks)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help="torch threads of each --workers process (default: 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="segment on a running dask cluster, e.g. tcp://10.0.0.5:8786 (dask-jobqueue, Kubernetes)")
    p.add_argument("--block-size", type=int, metavar="PIXELS",
                   help="Y/X block edge for zarr inputs on a cluster (multiple of 16; default: 2048)")
    p.add_argument("--into-image", action="store_true",
                   help="OME-Zarr inputs: write the labels into the image as labels group 'litenext' "
                        "(<input>/labels/litenext) instead of <name>_labels.zarr in --output")


def wants(args: argparse.Namespace) -> bool:
    """True when this module runs the command: a zarr input, or a cluster."""
    from ..io.ngff import is_zarr_path

    return bool(getattr(args, "workers", None) or getattr(args, "scheduler", None)
                or any(is_zarr_path(i) for i in args.inputs))


def run(args: argparse.Namespace) -> int:
    """Segment the zarr inputs (and, with a cluster, the image files); 0, or 1 when some failed."""
    from . import CliError
    from . import predict as cli_predict
    from ..io.ngff import is_zarr_path

    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    if args.workers and args.scheduler:
        raise CliError("give --workers (a local cluster) or --scheduler (a running one), not both")
    if args.threads_per_worker < 1:
        raise CliError(f"--threads-per-worker must be at least 1, got {args.threads_per_worker}")
    stores = [Path(i).expanduser() for i in args.inputs if is_zarr_path(i)]
    others = [i for i in args.inputs if not is_zarr_path(i)]
    outdir = Path(args.output).expanduser()
    with _client(args) as client:
        status = 0
        if others:
            rest = argparse.Namespace(**dict(vars(args), inputs=others, workers=None, scheduler=None))
            status = cli_predict.run(rest) if client is None else _run_files(rest, client)
        failed = [s for s in stores if not _run_store(s, outdir, client, args)]
    if failed:
        print(f"napari-litenext: error: {len(failed)} of {len(stores)} zarr input(s) failed: "
              f"{', '.join(s.name for s in failed)}", file=sys.stderr)
    return 1 if failed or status else 0


@contextlib.contextmanager
def _client(args: argparse.Namespace):
    if not (args.workers or args.scheduler):
        yield None
        return
    from distributed import Client, LocalCluster

    if args.scheduler:
        with Client(args.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _model_source(args: argparse.Namespace) -> str:
    from ..network.registry import DEFAULT_MODEL

    return args.model or DEFAULT_MODEL


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from .predict import segment_options

    return segment_options(args)


def _run_store(path: Path, outdir: Path, client: Any, args: argparse.Namespace) -> bool:
    """Segment one zarr input; False (reported on one line) when it failed."""
    from .. import __version__
    from ..errors import LiteNeXtError
    from ..io.ngff import LabelStore, read_zarr
    from ..progress import run_to_end

    try:
        image = read_zarr(path)
        if args.into_image and not image.ome:
            raise LiteNeXtError(f"{path}: --into-image needs an OME-Zarr image; this is a plain zarr array")
        stem = path.name[:-len(".zarr")] if path.name.lower().endswith(".zarr") else path.name
        stem = stem[:-len(".ome")] if stem.lower().endswith(".ome") else stem
        beside = {"image": path, "name": "litenext"} if args.into_image else {"name": f"{stem}_labels"}
        store = LabelStore(outdir / f"{stem}_labels.zarr", scale=image.scale, units=image.units,
                           overwrite=args.overwrite, **beside)
        if args.overlay:
            print(f"napari-litenext: note: no overlay for zarr input {path.name} (open the labels in napari)",
                  file=sys.stderr)
        settings = dict(_settings(args), axes=args.axes or image.axes, keep_probabilities=args.probabilities)
        if client is None:
            from ..inference.predict import segment
            from ..network.registry import load_model

            model = load_model(_model_source(args), device=args.device)
            job = segment(image.array, model, out=store, **settings)
        else:
            from ..inference.scale import segment_blocks_of

            job = segment_blocks_of(str(path), _model_source(args), out=store, client=client,
                                    block_size=args.block_size or 2048, device=args.device, **settings)
        with _bar(path.name, args.quiet) as show:
            prediction = run_to_end(job, show)
        if not args.quiet:
            print(f"napari-litenext: wrote {prediction.settings['store']} (napari-litenext {__version__})",
                  file=sys.stderr)
        return True
    except (LiteNeXtError, FileExistsError, MemoryError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        print(f"napari-litenext: error: {text if str(path) in text else f'{path}: {text}'}", file=sys.stderr)
        return False


@contextlib.contextmanager
def _bar(name: str, quiet: bool):
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(event: Any) -> None:
        bar = bars.get(event.stage)
        if bar is None:  # a new stage: its own bar, the previous one closed
            for old in bars.values():
                old.close()
            bar = bars[event.stage] = tqdm(total=event.total, desc=f"{name} {event.stage}", unit="step",
                                           file=sys.stderr, disable=quiet, leave=False, dynamic_ncols=True)
        bar.update(event.done - bar.n)

    try:
        yield show
    finally:
        for bar in bars.values():
            bar.close()


def _file_task(args: argparse.Namespace, model_source: str, item: tuple[Path, dict[str, Path]]) -> str | None:
    """One image file on a worker, written as the single-process command writes it; an error message or None."""
    from .. import __version__
    from . import predict as cli_predict
    from ..errors import LiteNeXtError
    from ..inference.batch_outputs import write_output_set
    from ..inference.distributed import worker_model

    path, outputs = item
    try:
        model = worker_model(model_source, None if args.device == "auto" else args.device)
        image, prediction = cli_predict._segment_one(path, model, args)
        settings = dict(prediction.settings, source=path.name, model_source=model_source,
                        software=f"napari-litenext {__version__}")
        write_output_set(path, outputs, image, prediction, settings, overwrite=args.overwrite,
                         skip_existing=args.skip_existing)
        return None
    except (LiteNeXtError, MemoryError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        return text if str(path) in text else f"{path}: {text}"


def _run_files(args: argparse.Namespace, client: Any) -> int:
    """Image files as one task each on the cluster; 0, or 1 when some failed."""
    import functools

    from . import CliError
    from . import predict as cli_predict
    from ..inference.distributed import run_tasks
    from ..io.images import list_images
    from ..progress import run_to_end

    cli_predict._check_numbers(args, CliError)
    files = list_images(args.inputs)
    outdir = Path(args.output).expanduser()
    plans = cli_predict._plan_outputs(files, outdir, args, CliError)
    if not args.overwrite:
        cli_predict._refuse_clashes(plans, args, CliError)
    if getattr(args, "skip_existing", False):  # as the single-process command: complete sets are kept
        files = [f for f in files if cli_predict._set_state(plans[f]).kind != "complete"]
    quiet = argparse.Namespace(**dict(vars(args), quiet=True))
    task = functools.partial(_file_task, quiet, _model_source(args))
    with _bar("images", args.quiet) as show:
        errors = [e for e in run_to_end(run_tasks(client, task, [(f, plans[f]) for f in files], "images"), show) if e]
    for text in errors:
        print(f"napari-litenext: error: {text}", file=sys.stderr)
    if not args.quiet:
        print(f"napari-litenext: segmented {len(files) - len(errors)} of {len(files)} image(s) into {args.output}",
              file=sys.stderr)
    return 1 if errors else 0
