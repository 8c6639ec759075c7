"""``napari-litenext train``: train a model on folders of images and masks.

Writes into ``--output``: best.pt (the model to use), last.pt (to resume), history.csv (the
curves) and curves.png (loss and validation Dice per epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import CliError

if TYPE_CHECKING:  # pragma: no cover
    from ..training.config import TrainConfig

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    from ..training.config import LossConfig, TrainConfig

    p = subparsers.add_parser(
        "train", help="train a model on image/mask folders",
        description="Train LiteNeXt on images and masks paired by file name (a.png with a.png, a_mask.png, "
                    "a_labels.tif, ...). Masks may be binary (0/1, 0/255) or instance labels (foreground = "
                    "label > 0). Settings left out take the recipe's default, or when fine-tuning (--init) or "
                    "resuming, the starting model's value.")
    p.add_argument("--images", required=True, help="folder of training images")
    p.add_argument("--masks", required=True, help="folder of masks, named like the images")
    p.add_argument("--output", "-o", required=True, help="folder for best.pt, last.pt, history.csv, curves.png")
    val = p.add_argument_group("validation (default: a seeded 10 percent of the training pairs)")
    val.add_argument("--val-images", help="folder of validation images")
    val.add_argument("--val-masks", help="folder of validation masks")
    val.add_argument("--val-fraction", type=float, default=0.1, help="share held out when no folder is given")
    val.add_argument("--split", help="JSON file with 'train' and 'val' lists of file stems (e.g. split.json)")
    rec = p.add_argument_group("recipe (defaults: the paper's)")
    for flag, kind, text in (("--epochs", int, "passes over the training set"),
                             ("--lr", float, "NAdam learning rate"),
                             ("--lr-step", int, "epochs between learning-rate decays (0 = none)"),
                             ("--lr-gamma", float, "learning-rate decay factor"),
                             ("--batch-size", int, "image pairs per step (under torchrun the whole batch, "
                                                   "shared by the processes)")):
        default = getattr(TrainConfig, flag[2:].replace("-", "_"))
        rec.add_argument(flag, type=kind, help=f"{text} (default: {default})")
    rec.add_argument("--loss", choices=("mwl", "dice_bce"), help=f"default: {LossConfig.loss}")
    rec.add_argument("--mwl-preset", choices=("boundary", "authors-code"), help=f"default: {LossConfig.preset}")
    rec.add_argument("--mwl-weights", nargs=3, type=float, metavar=("W_B", "W_O", "W_M"),
                     help="background, object and margin weights (override the preset)")
    rec.add_argument("--mwl-kernel", type=int, help="margin kernel size (odd; overrides the preset)")
    rec.add_argument("--srp", action=argparse.BooleanOptionalAction, default=None,
                     help="Self-embedding Representation Parallel (default: on)")
    rec.add_argument("--srp-lambda", type=float, help=f"default: {LossConfig.srp_lambda}")
    rec.add_argument("--srp-tau", type=float, help=f"default: {LossConfig.srp_tau}")
    augment = rec.add_mutually_exclusive_group()
    augment.add_argument("--no-augment", action="store_true")
    augment.add_argument("--robust-augment", action="store_true",
                         help="also scale 0.5-2x, stain, hue/saturation, greyscale, contrast, inversion and noise, "
                              "for a model that must work on images from other labs, stains and magnifications")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--val-every", type=int, default=1)
    model = p.add_argument_group("settings the model will carry (default: the starting model's, or the "
                                 "defaults of predict from scratch: resize mode, 256 px, dtype normalisation)")
    model.add_argument("--patch-size", type=int, help="network input edge (multiple of 16)")
    model.add_argument("--mode", choices=("tile", "resize"),
                       help="tile: native-resolution patches (nuclei); resize: whole image resized (lesions)")
    model.add_argument("--normalisation", choices=("dtype", "percentile", "minmax"))
    model.add_argument("--invert", action=argparse.BooleanOptionalAction, default=None,
                       help="invert intensities (dark objects on bright)")
    model.add_argument("--threshold", type=float, help="foreground probability threshold")
    model.add_argument("--min-size", type=int, help="smallest object kept, in pixels")
    model.add_argument("--instances", action=argparse.BooleanOptionalAction, default=None,
                       help="split touching objects into numbered instances")
    run_ = p.add_argument_group("run")
    run_.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    run_.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    run_.add_argument("--init", help="fine-tune from a bundled model name or a checkpoint")
    run_.add_argument("--resume", action="store_true", help="continue the run in --output from last.pt")
    run_.add_argument("--overwrite", action="store_true", help="allow replacing a model in --output")
    run_.add_argument("--skip-bad", action="store_true",
                      help="leave out image/mask pairs that cannot be read or used (listed at the end) instead "
                           "of stopping")
    run_.add_argument("--channel", type=int, default=None,
                      help="channel to train on in multichannel images (give the same to predict)")
    run_.add_argument("--name", default=None, help="model name for the model card (default: output folder name)")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> "TrainConfig":
    """The ``TrainConfig`` the arguments describe: only the settings given, the rest left to the core.

    Raises:
        SettingsError: a value out of range.
    """
    from ..training.config import ROBUST_AUGMENT, AugmentConfig, LossConfig, TrainConfig

    w_b, w_o, w_m = args.mwl_weights or (None, None, None)
    loss = {"loss": args.loss, "preset": args.mwl_preset, "w_b": w_b, "w_o": w_o, "w_m": w_m,
            "kernel_size": args.mwl_kernel, "srp": args.srp, "srp_lambda": args.srp_lambda, "srp_tau": args.srp_tau}
    given = {"epochs": args.epochs, "lr": args.lr, "lr_step": args.lr_step, "lr_gamma": args.lr_gamma,
             "batch_size": args.batch_size, "patch_size": args.patch_size, "mode": args.mode,
             "normalisation": args.normalisation, "invert": args.invert, "threshold": args.threshold,
             "min_size": args.min_size, "instances": args.instances}
    return TrainConfig(loss=LossConfig(**{k: v for k, v in loss.items() if v is not None}),
                       augment=AugmentConfig(enabled=not args.no_augment,
                                             **(ROBUST_AUGMENT if args.robust_augment else {})), seed=args.seed,
                       val_every=args.val_every, device=args.device, amp=not args.no_amp, init=args.init,
                       resume=args.resume, output_dir=str(Path(args.output)), overwrite=args.overwrite,
                       name=args.name or Path(args.output).name, **{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 130 when interrupted."""
    from ..io.reader_warnings import library_warnings_once

    with library_warnings_once():
        return _run(args)


def _load_pairs(args: argparse.Namespace) -> tuple[list, list, list[dict[str, str]]]:
    """(training pairs, validation pairs, pairs left out by --skip-bad) as the arguments ask."""
    from ..errors import DataError
    from ..training.data import samples_from_folders, split_samples

    def load(images: str, masks: str, ids: list[str] | None = None) -> list:
        try:
            samples = samples_from_folders(images, masks, ids=ids, channel=args.channel, skip_bad=args.skip_bad)
        except DataError as exc:
            if getattr(exc, "bad_pairs", None):
                raise CliError(f"{exc}, or add --skip-bad to train without them") from None
            raise
        skipped.extend(samples.skipped)
        return samples

    skipped: list[dict[str, str]] = []
    stems = _read_split(args.split) if args.split else None
    if stems is not None:
        return load(args.images, args.masks, stems["train"]), load(args.images, args.masks, stems["val"]), skipped
    if args.val_images or args.val_masks:
        if not (args.val_images and args.val_masks):
            raise CliError("give both --val-images and --val-masks")
        return load(args.images, args.masks), load(args.val_images, args.val_masks), skipped
    return (*split_samples(load(args.images, args.masks), args.val_fraction, args.seed), skipped)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..progress import run_to_end
    from ..training.curves import plot_history
    from ..errors import TrainingError
    from ..io.reader_warnings import print_warning
    from ..training.distributed import process_rank
    from ..training.loop import train

    cfg = config_from_args(args)  # bad settings fail before any image is read
    out = Path(args.output)
    train_samples, val_samples, skipped = _load_pairs(args)
    if skipped:
        print_warning(f"leaving out {len(skipped)} unusable pair(s) (listed at the end)")

    bars: list = []

    def show(event) -> None:
        if event.kind == "start":
            print(f"napari-litenext: {event.message}", file=sys.stderr)
            bars.append(tqdm(total=event.total_steps, initial=event.global_step, unit="step", file=sys.stderr,
                             dynamic_ncols=True))
        elif event.kind == "step":
            bars[0].update(event.global_step - bars[0].n)
            bars[0].set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}",
                                best_dice="-" if event.best_val_dice is None else f"{event.best_val_dice:.4f}")
        elif event.kind == "epoch" and event.val_dice is not None:
            bars[0].write(f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, "
                          f"validation Dice {event.val_dice:.4f}")

    quiet = process_rank() != 0  # under torchrun, rank 0 reports for every process
    try:
        result = run_to_end(train(train_samples, val_samples, cfg), None if quiet else show)
    except KeyboardInterrupt:
        best = out / "best.pt"
        if not quiet:
            print(f"napari-litenext: interrupted; the best model so far is "
                  f"{best if best.exists() else 'not written yet'}; continue with --resume", file=sys.stderr)
        return 130
    except TrainingError as exc:
        if getattr(exc, "resumable", False):
            raise CliError(f"{exc} (add --resume to the same command)") from None
        raise
    finally:
        for bar in bars:
            bar.close()
    if quiet:
        return 0
    if result.history:
        _plot(plot_history, result, out / "curves.png")
    if result.checkpoint is None:
        raise CliError("training ended before any validation; nothing was saved")
    print(f"best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}")
    print(f"model: {result.checkpoint}")
    print(f"curves: {out / 'history.csv'}, {out / 'curves.png'}")
    if skipped:
        print(f"left out {len(skipped)} unusable pair(s):")
        for bad in skipped:
            print(f"  {bad['reason']}")
    return 0


def _plot(plot_history, result, path: Path) -> None:
    """curves.png, or a warning when it cannot be written: the model is saved either way."""
    from ..io.reader_warnings import print_warning
    from ..training.run_folder import write_failure

    try:
        plot_history(result.history, path, title=result.config.name)
    except OSError as exc:
        reason = write_failure(exc, path.parent)
        if reason is None:
            raise
        print_warning(f"could not write {path}: {reason}; history.csv holds the same curves")


def _read_split(path: str) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
        return {"train": list(data["train"]), "val": list(data["val"])}
    except FileNotFoundError:
        raise CliError(f"split file not found: {path}") from None
    except (ValueError, KeyError, TypeError):
        raise CliError(f"{path} must be JSON with 'train' and 'val' lists of file stems") from None
