"""``napari-litenext train``: train a model on folders of images and masks.

Writes into ``--output``: best.pt (the model to use), last.pt (to resume), history.csv (the
curves) and curves.png (loss and validation Dice per epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on image/mask folders",
        description="Train LiteNeXt on images and masks paired by file stem. Masks may be binary "
                    "(0/1, 0/255) or instance labels (foreground = label > 0).")
    p.add_argument("--images", required=True, help="folder of training images")
    p.add_argument("--masks", required=True, help="folder of masks, named like the images")
    p.add_argument("--output", "-o", required=True, help="folder for best.pt, last.pt, history.csv, curves.png")
    val = p.add_argument_group("validation (default: a seeded 10%% of the training pairs)")
    val.add_argument("--val-images", help="folder of validation images")
    val.add_argument("--val-masks", help="folder of validation masks")
    val.add_argument("--val-fraction", type=float, default=0.1, help="share held out when no folder is given")
    val.add_argument("--split", help="JSON file with 'train' and 'val' lists of file stems (e.g. split.json)")
    rec = p.add_argument_group("recipe")
    rec.add_argument("--epochs", type=int, default=300)
    rec.add_argument("--lr", type=float, default=1e-4, help="NAdam learning rate")
    rec.add_argument("--lr-step", type=int, default=100, help="epochs between learning-rate decays (0 = none)")
    rec.add_argument("--lr-gamma", type=float, default=0.25, help="learning-rate decay factor")
    rec.add_argument("--batch-size", type=int, default=32)
    rec.add_argument("--patch-size", type=int, default=256, help="network input edge (multiple of 16)")
    rec.add_argument("--mode", choices=("tile", "resize"), default="resize",
                     help="tile: native-resolution patches (nuclei); resize: whole image resized (lesions)")
    rec.add_argument("--loss", choices=("mwl", "dice_bce"), default="mwl")
    rec.add_argument("--mwl-preset", choices=("boundary", "authors-code"), default="boundary")
    rec.add_argument("--mwl-weights", nargs=3, type=float, metavar=("W_B", "W_O", "W_M"),
                     help="background, object and margin weights (override the preset)")
    rec.add_argument("--mwl-kernel", type=int, help="margin kernel size (odd; overrides the preset)")
    rec.add_argument("--srp", action=argparse.BooleanOptionalAction, default=True,
                     help="Self-embedding Representation Parallel (on by default)")
    rec.add_argument("--srp-lambda", type=float, default=0.1)
    rec.add_argument("--srp-tau", type=float, default=0.99)
    rec.add_argument("--normalisation", choices=("dtype", "percentile", "minmax"), default="dtype")
    rec.add_argument("--invert", action="store_true", help="invert intensities (dark objects on bright)")
    rec.add_argument("--no-augment", action="store_true")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--val-every", type=int, default=1)
    run_ = p.add_argument_group("run")
    run_.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    run_.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    run_.add_argument("--init", help="fine-tune from a bundled model name or a checkpoint")
    run_.add_argument("--resume", action="store_true", help="continue the run in --output from last.pt")
    run_.add_argument("--overwrite", action="store_true", help="allow replacing a model in --output")
    run_.add_argument("--name", default=None, help="model name for the model card (default: output folder name)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..training.augment import AugmentConfig
    from ..training.curves import plot_history
    from ..training.data import samples_from_folders, split_samples
    from ..training.loop import TrainConfig, train

    out = Path(args.output)
    stems = _read_split(args.split) if args.split else None
    if stems is not None:
        train_samples = samples_from_folders(args.images, args.masks, ids=stems["train"])
        val_samples = samples_from_folders(args.images, args.masks, ids=stems["val"])
    elif args.val_images or args.val_masks:
        if not (args.val_images and args.val_masks):
            raise CliError("give both --val-images and --val-masks")
        train_samples = samples_from_folders(args.images, args.masks)
        val_samples = samples_from_folders(args.val_images, args.val_masks)
    else:
        train_samples, val_samples = split_samples(samples_from_folders(args.images, args.masks),
                                                   args.val_fraction, args.seed)
    w_b, w_o, w_m = args.mwl_weights or (None, None, None)
    try:
        cfg = TrainConfig(
            epochs=args.epochs, lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
            batch_size=args.batch_size, patch_size=args.patch_size, mode=args.mode, loss=args.loss,
            mwl_preset=args.mwl_preset, mwl_w_b=w_b, mwl_w_o=w_o, mwl_w_m=w_m, mwl_kernel=args.mwl_kernel,
            srp=args.srp, srp_lambda=args.srp_lambda, srp_tau=args.srp_tau, normalisation=args.normalisation,
            invert=args.invert, augment=AugmentConfig(enabled=not args.no_augment), seed=args.seed,
            val_every=args.val_every, device=args.device, amp=not args.no_amp, init=args.init,
            resume=args.resume, output_dir=str(out), overwrite=args.overwrite, name=args.name or out.name)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.loss != "mwl" and (args.mwl_weights or args.mwl_kernel):
        raise CliError("--mwl-weights and --mwl-kernel apply to --loss mwl only")

    bar = None
    result = None
    events = train(train_samples, val_samples, cfg)
    try:
        while True:
            event = next(events)
            if event.kind == "start":
                print(f"napari-litenext: {event.message}", file=sys.stderr)
                bar = tqdm(total=event.total_steps, initial=event.global_step, unit="step", file=sys.stderr,
                           dynamic_ncols=True)
            elif event.kind == "step":
                bar.update(event.global_step - bar.n)
                bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}",
                                best_dice="-" if event.best_val_dice is None else f"{event.best_val_dice:.4f}")
            elif event.kind == "epoch" and event.val_dice is not None:
                bar.write(f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, "
                          f"validation Dice {event.val_dice:.4f}")
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        best = out / "best.pt"
        print(f"napari-litenext: interrupted; the best model so far is {best if best.exists() else 'not written yet'}"
              f"; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    if result.history:
        plot_history(result.history, out / "curves.png", title=cfg.name)
    if result.checkpoint is None:
        raise CliError("training ended before any validation; nothing was saved")
    print(f"best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}")
    print(f"model: {result.checkpoint}")
    print(f"curves: {out / 'history.csv'}, {out / 'curves.png'}")
    return 0


def _read_split(path: str) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
        return {"train": list(data["train"]), "val": list(data["val"])}
    except FileNotFoundError:
        raise CliError(f"split file not found: {path}") from None
    except (ValueError, KeyError, TypeError):
        raise CliError(f"{path} must be JSON with 'train' and 'val' lists of file stems") from None
