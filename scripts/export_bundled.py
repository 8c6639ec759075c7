"""Evaluate a trained run on its dataset's test split and export it as a bundled model.

    python scripts/export_bundled.py nuclei --run runs/nuclei [--no-write]
    python scripts/export_bundled.py skin-lesion --run runs/skin-lesion

Writes src/napari_litenext/models/<name>.pt (weights, config, inference settings and a model card
with the test metrics) and <name>.md (the card as Markdown), and prints the metrics as JSON.
Test images are used here only, after training, never to choose a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LITENEXT_SHARED", REPO.parent / "shared"))
MODELS = REPO / "src" / "napari_litenext" / "models"

CARDS = {
    "nuclei": dict(
        description=(
            "Segments cell nuclei in 2D microscopy: fluorescence (DAPI/Hoechst-like) and brightfield or "
            "H&E colour images, at native resolution in overlapping tiles, with optional splitting of "
            "touching nuclei into instances."),
        data=(
            "2018 Data Science Bowl stage 1 training set (BBBC038, Broad Institute; CC0), train split of "
            "../shared/data/dsb2018/split.json (536 images; the 6 images removed by the community fixes left "
            "out, the 109 corrected masks used). Validation: the split's 67 val images. Test: its 67 test "
            "images (never used for training or model selection)."),
        limits=(
            "Trained on the DSB 2018 variety only (nuclei roughly 5-60 px across; 451 grey and 85 colour "
            "training images). Object size 'auto' rescales images whose nuclei are more than 2x larger or "
            "smaller than the trained 21.5 px, but dim, noisy images of large nuclei still score far below "
            "DSB-like ones (see the per-type table), and the weights saw no stain, noise or scale "
            "augmentation: for such images try `nuclei-robust`. Stained tissue (H&E-like) is the weakest "
            "type: dense nuclei merge and pale ones are missed (F1@0.5 about 0.63-0.66 against 0.85 on grey "
            "images). Instance splitting is a distance-transform watershed on the semantic mask, so strongly "
            "non-convex touching nuclei can be over- or under-split. Trained on CPU for a limited number "
            "of epochs (see recipe)."),
    ),
    "nuclei-robust": dict(
        description=(
            "Segments cell nuclei in 2D microscopy from other labs, stains and magnifications than DSB 2018: "
            "the nuclei model fine-tuned with stain, colour, contrast, inversion, noise and 0.5-2x scale "
            "augmentation, with post-processing adapted to each image's objects and automatic object size."),
        data=(
            "2018 Data Science Bowl stage 1 training set (BBBC038, Broad Institute; CC0), train split of "
            "../shared/data/dsb2018/split.json (536 images; the 6 images removed by the community fixes left "
            "out, the 109 corrected masks used). Validation: the split's 67 val images and synthetic dim, "
            "noisy, enlarged versions of its grey images (scripts/generalisation.py). Test: its 67 test "
            "images (never used for training or model selection)."),
        limits=(
            "Better than `nuclei` on dim, noisy images and on nuclei 2-8x larger than DSB's, worse on "
            "DSB-like images: on grey brightfield images of large flat cells (squamous epithelium) it "
            "takes parts of the cytoplasm for nuclei (dozens of false objects per image); on the DSB test "
            "split its Dice is about 0.04 lower than `nuclei`'s. Stained tissue (H&E-like) remains the "
            "weakest type (F1@0.5 about 0.66-0.69). Trained on CPU for a limited number of epochs (see "
            "recipe)."),
    ),
    "skin-lesion": dict(
        description=(
            "Segments the pigmented lesion in a dermoscopy image (one lesion per image), by resizing the whole "
            "image to 256 x 256 and the mask back, as the LiteNeXt paper does."),
        data=(
            "PH2 dermoscopy database (Mendonca et al., EMBC 2013; Universidade do Porto / Hospital Pedro "
            "Hispano), made available for research and education with citation; not redistributed here. "
            "Train split of ../shared/data/ph2/split.json (128 images), validation its 16 val images, test its "
            "16 test images (never used for training or model selection). Cite PH2 when you use this model."),
        limits=(
            "PH2 holds 200 images from one clinic and one dermoscope (about 765 x 574 px): other devices, "
            "hair, ink marks, rulers and very large lesions that fill the frame are under-represented. "
            "Research use only; not a medical device. Trained on CPU for a limited number of epochs (see "
            "recipe)."),
    ),
}


def _link_split(dataset: str, ids: list[str], mask_folder: str, suffix: str, tmp: Path,
                fixes: bool = False) -> tuple[Path, Path]:
    root = SHARED / "data" / dataset
    changed = set((root / "fixes" / "changed_ids.txt").read_text().split()) if fixes else set()
    images, masks = tmp / "images", tmp / f"masks-{mask_folder}{'-fixed' if fixes else ''}"
    images.mkdir(exist_ok=True)
    masks.mkdir()
    for i in ids:
        if not (images / f"{i}.png").exists():
            os.symlink(root / "images" / f"{i}.png", images / f"{i}.png")
        source = (root / "fixes" / mask_folder if i in changed else root / mask_folder) / f"{i}{suffix}"
        os.symlink(source, masks / f"{i}{suffix}")
    return images, masks


def evaluate_run(name: str, model, paper_only: bool = False) -> dict:
    """Test-split metrics of ``model``: paper protocol, and unless ``paper_only`` native and instances."""
    from napari_litenext.inference.evaluate import evaluate

    dataset = "dsb2018" if name.startswith("nuclei") else "ph2"
    split = json.loads((SHARED / "data" / dataset / "split.json").read_text())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, masks = _link_split(dataset, split["test"], "masks", ".png", tmp)
        t0 = time.time()
        paper = evaluate(model, images, masks, protocol="paper")
        results["paper_protocol"] = {**paper.means, "n_skipped": len(paper.skipped)}
        if paper_only:
            return results
        results["native"] = evaluate(model, images, masks, protocol="native").means
        if dataset == "dsb2018":
            _, fixed = _link_split(dataset, split["test"], "masks", ".png", tmp, fixes=True)
            results["native_fixed_masks"] = evaluate(model, images, fixed, protocol="native").means
            _, inst = _link_split(dataset, split["test"], "masks_instance", ".tif", tmp)
            results["instances"] = evaluate(model, images, inst, protocol="native", instances=True).means
        results["seconds"] = round(time.time() - t0, 1)
    return results


def _card_markdown(card, inference, sha: str, results: dict, extra: str = "") -> str:
    lines = [f"# {card.name}", "", card.description, "", "## Training data", "", card.data, "",
             "## Recipe", "", card.recipe, "", "## Inference settings", "",
             f"mode `{inference.mode}`, input size {inference.input_size}, tile {inference.tile_size} "
             f"(overlap {inference.tile_overlap}), normalisation `{inference.normalisation}`"
             + (f" (percentiles {inference.percentiles[0]}-{inference.percentiles[1]})"
                if inference.normalisation == "percentile" else "")
             + f", threshold {inference.threshold}, minimum object size {inference.min_size} px"
             + (", touching nuclei split into instances" if inference.instances else "")
             + (", post-processing adapted to each image's objects" if inference.adaptive else "")
             + (f", object size `{inference.object_size}` (trained at {inference.trained_object_size} px)"
                if inference.object_size else "") + ".", "",
             "## Test metrics (per image, threshold 0.5)", "",
             "| protocol | Dice | IoU | precision | recall | F1@0.5 | AJI |", "|---|---|---|---|---|---|---|"]

    def row(label, m):
        get = lambda k: f"{m[k]:.4f}" if k in m else "-"  # noqa: E731
        return f"| {label} | {get('dice')} | {get('iou')} | {get('precision')} | {get('recall')} | " \
               f"{get('f1_50')} | {get('aji')} |"

    labels = {"paper_protocol": "paper (256 x 256, empty ground truth skipped)",
              "native": "native resolution, the product's inference",
              "native_fixed_masks": "native, community-fixed masks", "instances": "native, instance labels"}
    for key, label in labels.items():
        if key in results:
            lines.append(row(label, results[key]))
    lines += ["", f"Validation Dice (model selection, {inference.mode} mode): {card.metrics.get('val_dice')}.", ""]
    lines += [extra.strip(), ""] if extra else []
    lines += ["## Known limits", "", card.limits, "", f"Trained by {card.trained_by}. "
              f"Checkpoint SHA-256: `{sha}`.", ""]
    return "\n".join(lines)


def _training_hours(run: Path) -> float:
    import csv

    with open(run / "history.csv", newline="") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f)) / 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(CARDS))
    parser.add_argument("--run", required=True, help="training output folder holding best.pt, or a checkpoint "
                                                     "file to store with new settings")
    parser.add_argument("--no-write", action="store_true", help="only evaluate")
    parser.add_argument("--note", default="", help="sentence appended to the recipe (e.g. how a run was resumed)")
    parser.add_argument("--min-size", type=int, help="post-processing minimum object size to store (choose it on "
                                                     "the validation split, never on test)")
    parser.add_argument("--instances", action=argparse.BooleanOptionalAction, default=None,
                        help="store whether the model's labels are instances by default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other inference settings to store, e.g. adaptive=true object_size=auto "
                             "trained_object_size=18.3 (chosen on validation images)")
    parser.add_argument("--card-section", help="Markdown file added to the card before its known limits "
                                               "(e.g. per-image-type scores)")
    parser.add_argument("--limits", help="replace the card's known limits with this text")
    args = parser.parse_args()

    from napari_litenext.network.checkpoint import load_checkpoint, save_checkpoint
    from napari_litenext.config import ModelCard

    run = Path(args.run)
    ckpt = load_checkpoint(run if run.is_file() else run / "best.pt")
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key] = json.loads(value) if value not in ("auto",) else value
    ckpt.inference = ckpt.inference.with_overrides(min_size=args.min_size, instances=args.instances, **extra)
    model = ckpt.build_model()
    results = evaluate_run(args.name, model)
    print(json.dumps(results, indent=1))
    if args.no_write:
        return 0
    history = ckpt.extra.get("train_config", {})
    metrics = {"test_dice_paper": results["paper_protocol"]["dice"], "test_dice_native": results["native"]["dice"]}
    if "instances" in results:
        metrics.update(test_f1_50=results["instances"]["f1_50"], test_aji=results["instances"]["aji"])
    metrics = {k: round(float(v), 4) for k, v in {**ckpt.card.metrics, **metrics}.items()}
    if run.is_file():  # a finished model given new settings: its recipe stays as written
        recipe = f"{ckpt.card.recipe}{' ' + args.note if args.note else ''}"
    else:
        hours = _training_hours(run)
        recipe = (f"{ckpt.card.recipe}. {args.note + ' ' if args.note else ''}Trained on 2 CPU cores (no GPU) in "
                  f"{hours:.1f} h, shared with other work; the specification's recipe (300 epochs, batch 32, lr "
                  "1e-4) needs a GPU.")
    texts = dict(CARDS[args.name], **({"limits": args.limits} if args.limits else {}))
    card = ModelCard(name=args.name, recipe=recipe, metrics=metrics, trained_by=ckpt.card.trained_by, **texts)
    MODELS.mkdir(parents=True, exist_ok=True)
    sha = save_checkpoint(MODELS / f"{args.name}.pt", model, ckpt.inference, card)
    section = Path(args.card_section).read_text() if args.card_section else ""
    (MODELS / f"{args.name}.md").write_text(_card_markdown(card, ckpt.inference, sha, results, section))
    size = (MODELS / f"{args.name}.pt").stat().st_size
    print(f"wrote {MODELS / (args.name + '.pt')} ({size / 1e6:.2f} MB) and its card; epochs in recipe: "
          f"{history.get('epochs')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
