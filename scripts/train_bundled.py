"""Train the bundled models on ../shared/data with the fixed splits.

    python scripts/train_bundled.py nuclei --out runs/nuclei [--epochs 60] [--threads 1]
    python scripts/train_bundled.py skin-lesion --out runs/skin-lesion

nuclei: DSB 2018 train split (community-fixed masks where available, the 6 images the fixes
remove left out), validation on the val split, "tile" mode at native resolution with a quarter of
the patches drawn as whole images resized to 256 px (scale augmentation; also what the paper's
protocol shows the model), percentile normalisation so uint8 and uint16 microscopy look alike.
skin-lesion: PH2 train split, "resize" mode at 256 px, dtype normalisation, as the paper does.
Validation on the split's val images selects the checkpoint; test images are never used here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LITENEXT_SHARED", REPO.parent / "shared"))


def dsb_samples(ids, fixed: bool = True):
    from napari_litenext.training.data import samples_from_arrays
    from napari_litenext.io.images import read_image, read_mask

    root = SHARED / "data" / "dsb2018"
    changed = set((root / "fixes" / "changed_ids.txt").read_text().split()) if fixed else set()
    removed = set((root / "fixes" / "removed_ids.txt").read_text().split()) if fixed else set()
    ids = [i for i in ids if i not in removed]
    images = [read_image(root / "images" / f"{i}.png") for i in ids]
    masks = [read_mask((root / "fixes" / "masks" if i in changed else root / "masks") / f"{i}.png") for i in ids]
    return samples_from_arrays(images, masks, names=ids)


def ph2_samples(ids):
    from napari_litenext.training.data import samples_from_folders

    root = SHARED / "data" / "ph2"
    return samples_from_folders(root / "images", root / "masks", ids=ids)


RECIPES = {
    "nuclei": dict(mode="tile", patch_size=256, normalisation="percentile", batch_size=8, lr=1e-3,
                   epochs=60, lr_step=25, lr_gamma=0.25, loss="mwl", preset="boundary", srp=False,
                   resize_mix=0.25, max_patches_per_image=4, tile_size=512, name="nuclei"),
    # Fine-tunes the first nuclei model for images unlike DSB 2018: the widened augmentation
    # (scale 0.5-2x, stain, hue/saturation, greyscale, contrast, inversion, noise).
    "nuclei-robust": dict(mode="tile", patch_size=256, normalisation="percentile", batch_size=8, lr=5e-4,
                          epochs=30, lr_step=10, lr_gamma=0.3, loss="mwl", preset="boundary", srp=False,
                          resize_mix=0.25, max_patches_per_image=4, tile_size=512, name="nuclei",
                          init="nuclei-v1", augment="robust"),
    # The same with the widening at half the probabilities, so that more patches look like DSB
    # itself (the full widening cost in-distribution validation Dice).
    "nuclei-mild": dict(mode="tile", patch_size=256, normalisation="percentile", batch_size=8, lr=3e-4,
                        epochs=20, lr_step=8, lr_gamma=0.3, loss="mwl", preset="boundary", srp=False,
                        resize_mix=0.25, max_patches_per_image=4, tile_size=512, name="nuclei",
                        init="nuclei-v1", augment="mild"),
    # Continues nuclei-robust at a lower learning rate (its run plateaued after its first decay).
    "nuclei-robust-2": dict(mode="tile", patch_size=256, normalisation="percentile", batch_size=8, lr=2e-4,
                            epochs=20, lr_step=7, lr_gamma=0.3, loss="mwl", preset="boundary", srp=False,
                            resize_mix=0.25, max_patches_per_image=4, tile_size=512, name="nuclei",
                            init="runs/nuclei-robust/best.pt", augment="robust", seed=1),
    # Continues nuclei-robust-2 without inversion: inverted fluorescence (dark blobs on a bright
    # field) taught the model to take the cytoplasm of grey brightfield cells for nuclei
    # (validation image c395870a: 247 false objects).
    "nuclei-robust-3": dict(mode="tile", patch_size=256, normalisation="percentile", batch_size=8, lr=1e-4,
                            epochs=8, lr_step=4, lr_gamma=0.3, loss="mwl", preset="boundary", srp=False,
                            resize_mix=0.25, max_patches_per_image=4, tile_size=512, name="nuclei",
                            init="runs/nuclei-robust-2/best.pt", augment="robust-upright", seed=2),
    "skin-lesion": dict(mode="resize", patch_size=256, normalisation="dtype", batch_size=8, lr=1e-3,
                        epochs=150, lr_step=60, lr_gamma=0.25, loss="mwl", preset="boundary", srp=False,
                        name="skin-lesion"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override recipe fields, e.g. srp=true loss=dice_bce seed=1")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.model])
    if args.epochs:
        recipe["epochs"] = args.epochs
    for item in args.set:
        key, value = item.split("=", 1)
        try:
            recipe[key] = json.loads(value)
        except json.JSONDecodeError:  # a name such as boundary, tile or robust
            recipe[key] = value
    dataset = "ph2" if args.model == "skin-lesion" else "dsb2018"
    split = json.loads((SHARED / "data" / dataset / "split.json").read_text())
    load = dsb_samples if dataset == "dsb2018" else ph2_samples
    t0 = time.time()
    train_samples, val_samples = load(split["train"]), load(split["val"])
    print(f"loaded {len(train_samples)} train / {len(val_samples)} val in {time.time() - t0:.0f}s", flush=True)
    run_recipe(recipe, train_samples, val_samples, args.out, resume=args.resume)
    return 0


def run_recipe(recipe: dict[str, Any], train_samples: list, val_samples: list, out: str | os.PathLike,
               resume: bool = False, overwrite: bool = False) -> Any:
    """Train with one recipe (a RECIPES entry, possibly changed), printing every epoch.

    Args:
        recipe: TrainConfig and LossConfig fields together: loss fields (loss, preset, w_b, ...,
            srp_tau) go to the LossConfig, the rest to the TrainConfig; ``augment`` may be
            "robust" (ROBUST_AUGMENT), "mild" (its probabilities halved), "robust-upright" (without
            inversion) or a dict of AugmentConfig fields. Not modified.
        train_samples, val_samples: ``Sample`` lists (e.g. from ``dsb_samples``).
        out: run folder (best.pt, last.pt, history.csv); the settings go to <out>/recipe.json.
        resume, overwrite: as TrainConfig's.

    Returns:
        The ``TrainResult``.

    Raises:
        SettingsError: a recipe value out of range; TrainingError, CheckpointError as ``train``.
    """
    from napari_litenext.progress import run_to_end
    from napari_litenext.training.config import ROBUST_AUGMENT, AugmentConfig, LossConfig
    from napari_litenext.training.loop import TrainConfig, train

    recipe = dict(recipe)
    named = {"robust": ROBUST_AUGMENT, "robust-upright": {**ROBUST_AUGMENT, "invert": 0.0},
             "mild": {k: v / 2 for k, v in ROBUST_AUGMENT.items()}}
    augment = recipe.get("augment")
    if augment is not None:
        recipe["augment"] = AugmentConfig(**(named[augment] if isinstance(augment, str) else augment))
    loss = {k: recipe.pop(k) for k in list(recipe) if k in LossConfig.__dataclass_fields__}
    cfg = TrainConfig(output_dir=str(out), resume=resume, overwrite=overwrite, loss=LossConfig(**loss), **recipe)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "recipe.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    def show(event) -> None:
        if event.kind != "step":
            print(f"{event.kind:7s} epoch {event.epoch}/{event.epochs} loss {event.loss} val_dice {event.val_dice} "
                  f"best {event.best_val_dice} eta {event.eta_s and round(event.eta_s / 60)} min "
                  f"elapsed {event.elapsed_s / 60:.1f} min {event.message}", flush=True)

    return run_to_end(train(train_samples, val_samples, cfg), show)


if __name__ == "__main__":
    sys.exit(main())
