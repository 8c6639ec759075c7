"""``napari-litenext evaluate``: score a model on a folder of images with ground-truth masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model against ground-truth masks",
        description="Predict every image in --images and compare it with the mask of the same name in "
                    "--masks (<name>.png/.tif, <name>_mask.*, <name>_labels.*, ...). Prints mean Dice, "
                    "IoU, precision and recall; with --instances also F1 of objects matched at IoU 0.5 "
                    "and the aggregated Jaccard index.")
    parser.add_argument("--model", required=True, help="bundled model name or checkpoint file")
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--masks", required=True, type=Path,
                        help="folder of masks: binary ({0,1} or {0,255}) or instance labels")
    parser.add_argument("--instances", action="store_true",
                        help="also score objects (needs label masks; binary masks are split into "
                             "connected components)")
    parser.add_argument("--protocol", choices=("native", "paper"), default="native",
                        help="native: predict and score at each image's size (default); paper: resize to "
                             "256x256, score there, skip images with empty masks (as the LiteNeXt paper)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: the model's)")
    parser.add_argument("--min-size", type=int, default=None, metavar="PIXELS",
                        help="remove objects smaller than this (default: the model's; the paper protocol uses 0)")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                        help="adapt post-processing to the objects in each image; --no-adaptive for the fixed "
                             "rules (default: the model's; the paper protocol uses --no-adaptive)")
    parser.add_argument("--object-size", metavar="auto|PIXELS", default=None,
                        help="typical object diameter in pixels in the images, so that they are rescaled to the "
                             "object size the model was trained at (tile mode); auto estimates it from a first "
                             "pass; 0 = off (default: the model's; not applied with the paper protocol)")
    parser.add_argument("--channel", type=int, default=None, help="channel to segment in multichannel images")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write means and per-image scores to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out image/mask pairs that cannot be read or scored (listed with the scores) "
                             "instead of stopping at the first")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the JSON file; 0 on success."""
    from ..io.reader_warnings import library_warnings_once

    with library_warnings_once():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise CliError(f"{args.json} exists; add --overwrite to replace it")
    if args.json is not None and args.json.is_dir():
        raise CliError(f"--json {args.json} is a folder; give a file name")
    from ..config import check_inference_settings
    from ..errors import EvaluationError
    from ..inference.evaluate import evaluate_pairs

    check_inference_settings(threshold=args.threshold, min_size=args.min_size, adaptive=args.adaptive,
                             object_size=args.object_size)
    steps = evaluate_pairs(args.model, args.images, args.masks, instances=args.instances,
                           protocol=args.protocol, threshold=args.threshold, min_size=args.min_size,
                           adaptive=args.adaptive, object_size=args.object_size,
                           device=args.device, channel=args.channel, skip_bad=args.skip_bad)
    try:
        result = _drain(steps)
    except EvaluationError as exc:
        if getattr(exc, "bad_pairs", None):
            raise CliError(f"{exc}, or add --skip-bad to score the others") from None
        raise
    print(result.table())
    if args.json is not None:
        path = result.write_json(args.json, overwrite=args.overwrite)
        print(f"scores written to {path}")
    return 0


def _drain(steps):
    from tqdm import tqdm

    from ..progress import run_to_end

    bars: list = []

    def show(progress) -> None:
        if progress.message.startswith("note:"):
            return  # notes are printed with the table
        if not bars:
            # disable=None: no bar when stderr is not a terminal (logs, pipes)
            bars.append(tqdm(total=progress.total, unit="image", file=sys.stderr, disable=None, leave=False))
        bars[0].n = progress.done
        bars[0].set_postfix_str(progress.message[:30], refresh=True)

    try:
        return run_to_end(steps, show)
    finally:
        for bar in bars:
            bar.close()
