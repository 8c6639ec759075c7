"""How the nuclei model does on image types it saw little or nothing of (DSB 2018 by image type).

    python scripts/generalisation.py types
    python scripts/generalisation.py score --model nuclei-v1 --split test --out runs/gen/v1-test.json
    python scripts/generalisation.py score --model nuclei-v1 --split val --types large-noisy --out ...
    python scripts/generalisation.py loto --type colour --recipe nuclei --epochs 40 --patch 128 --out runs/loto

Image types: ``grey`` (metadata ``grayscale``: fluorescence, R=G=B) and ``colour`` (H&E,
brightfield); colour is further split into ``colour-bright`` (mean intensity > 127) and
``colour-dark`` when both hold at least 5 images of the split. ``large-noisy`` is our own held-out
type, made from the split's grey images by ``large_noisy`` (dim, noisy, nuclei 4x larger).

``score`` runs the product's inference (``predict`` with the model's own settings, instances on,
``--set`` overrides) and scores every image against the original masks (``--fixed``: the
community-fixed ones): Dice against masks/, F1@0.5 and AJI against masks_instance/, and
``metrics.instance_errors``. ``loto`` (leave one type out) trains from scratch without a type and
scores the best checkpoint on that type's val and test images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_bundled import RECIPES, SHARED, dsb_samples, run_recipe  # noqa: E402  (scripts folder)

DSB = SHARED / "data" / "dsb2018"
REAL_TYPES = ("grey", "colour", "colour-bright", "colour-dark")
#: Held-out image types made from grey images (``large_noisy`` settings): nuclei about 4x and 8x
#: their DSB size (median about 35 and 70 px across), dim and noisy.
SYNTHETIC = {"large-noisy": {}, "xl-noisy": {"crop": 96, "factor": 8}}
SYNTHETIC_TYPES = tuple(SYNTHETIC)
BRIGHT_MEAN = 127.0
MIN_GROUP = 5
SYNTHETIC_SEED = 2018
COLUMNS = ("dice", "f1_50", "aji", "fragments", "merges", "splits", "missed")


# ---------------------------------------------------------------- image types

def type_groups(ids: Sequence[str], grayscale: Mapping[str, bool], mean_intensity: Mapping[str, float],
                min_group: int = MIN_GROUP) -> dict[str, list[str]]:
    """Ids of each image type, in the order of ``ids``.

    Args:
        ids: image ids (one split).
        grayscale: id -> True for grey images (metadata.json's ``grayscale``).
        mean_intensity: id -> mean pixel value (0-255) of the image; needed for colour ids only.
        min_group: colour is split into ``colour-bright`` (mean > 127) and ``colour-dark`` only
            when both get at least this many images.

    Returns:
        ``{"grey": [...], "colour": [...]}``, plus ``colour-bright`` and ``colour-dark`` when split.

    Raises:
        KeyError: an id missing from ``grayscale``, or a colour id missing from ``mean_intensity``.
    """
    groups = {"grey": [i for i in ids if grayscale[i]], "colour": [i for i in ids if not grayscale[i]]}
    bright = [i for i in groups["colour"] if mean_intensity[i] > BRIGHT_MEAN]
    dark = [i for i in groups["colour"] if mean_intensity[i] <= BRIGHT_MEAN]
    if len(bright) >= min_group and len(dark) >= min_group:
        groups.update({"colour-bright": bright, "colour-dark": dark})
    return groups


def _metadata() -> tuple[dict[str, list[str]], dict[str, bool]]:
    split = json.loads((DSB / "split.json").read_text())
    meta = json.loads((DSB / "metadata.json").read_text())
    return split, {m["id"]: bool(m["grayscale"]) for m in meta}


def _colour_means(ids: Iterable[str], grayscale: Mapping[str, bool]) -> dict[str, float]:
    """Mean intensity of the colour images among ``ids`` (grey ones are not read)."""
    from napari_litenext.io.images import read_image

    return {i: float(read_image(DSB / "images" / f"{i}.png").mean()) for i in ids if not grayscale[i]}


def split_groups(split_name: str) -> dict[str, list[str]]:
    """``type_groups`` of one split of the shared DSB 2018 data."""
    split, grey = _metadata()
    ids = split[split_name]
    return type_groups(ids, grey, _colour_means(ids, grey))


def types_table() -> str:
    """Markdown table of image counts per type and split (the colour split shown even when unused)."""
    split, grey = _metadata()
    lines = ["| split | images | grey | colour | colour-bright | colour-dark | colour split used |",
             "|---|---|---|---|---|---|---|"]
    for name in ("train", "val", "test"):
        ids = split[name]
        means = _colour_means(ids, grey)
        used = type_groups(ids, grey, means)
        all_groups = type_groups(ids, grey, means, min_group=0)
        counts = " | ".join(str(len(all_groups[t])) for t in REAL_TYPES)
        lines.append(f"| {name} | {len(ids)} | {counts} | {'yes' if 'colour-bright' in used else 'no'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- synthetic type

def large_noisy(image: np.ndarray, labels: np.ndarray, seed: int, crop: int = 128, factor: int = 4,
                darken: float = 0.3, noise: float = 0.04, speckle: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A dim, noisy image with few large nuclei made from one grey image and its labels.

    A ``crop`` x ``crop`` window holding at least one whole nucleus (one not touching the window's
    edge; drawn from ``seed``, else the window centred on the largest nucleus) is enlarged
    ``factor`` times (image bilinear, labels nearest), multiplied by ``darken``, given
    multiplicative speckle (Gaussian, sigma ``speckle``) and additive Gaussian noise (sigma
    ``noise`` times the enlarged window's value range), and rounded to uint8.

    Args:
        image: H x W or H x W x C (grey stored as R=G=B: channel 0 is used) uint8 image, H and W
            at least ``crop``.
        labels: H x W integer labels, 0 = background, at least one object.
        seed: the same seed gives the same result.

    Returns:
        (``crop*factor`` x ``crop*factor`` x 3 uint8 image with R=G=B, the same size int32 labels
        numbered 1..n).

    Raises:
        ValueError: image and labels differ in size, are smaller than ``crop``, or no object.
    """
    grey = np.asarray(image)[..., 0] if np.ndim(image) == 3 else np.asarray(image)
    labels = np.asarray(labels)
    if grey.shape != labels.shape or min(grey.shape) < crop:
        raise ValueError(f"image {grey.shape} and labels {labels.shape} must match and be >= {crop} px")
    if not labels.any():
        raise ValueError("labels hold no object to crop around")
    rng = np.random.default_rng(seed)
    top, left = _window(labels, crop, rng)
    window = grey[top:top + crop, left:left + crop].astype(np.float32)
    lab = labels[top:top + crop, left:left + crop]
    ids, inverse = np.unique(lab, return_inverse=True)
    lab = (inverse.reshape(lab.shape) + (ids[0] != 0)).astype(np.int32)  # 1..n, background stays 0

    from napari_litenext.inference.resize import resize_bilinear

    size = crop * factor
    big = resize_bilinear(window, size, size) * darken
    big *= 1 + speckle * rng.standard_normal(big.shape, dtype=np.float32)
    big += noise * float(big.max() - big.min()) * rng.standard_normal(big.shape, dtype=np.float32)
    out = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2), np.repeat(np.repeat(lab, factor, axis=0), factor, axis=1)


def _window(labels: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a window holding a whole object."""
    from scipy import ndimage as ndi

    boxes = [b for b in ndi.find_objects(labels) if b is not None]
    h, w = labels.shape
    for _ in range(200):
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        if any(b[0].start > top and b[0].stop < top + crop and b[1].start > left and b[1].stop < left + crop
               for b in boxes):
            return top, left
    big = max(boxes, key=lambda b: (b[0].stop - b[0].start) * (b[1].stop - b[1].start))
    cy, cx = (big[0].start + big[0].stop) // 2, (big[1].start + big[1].stop) // 2
    return min(max(cy - crop // 2, 0), h - crop), min(max(cx - crop // 2, 0), w - crop)


def synthetic_seed(image_id: str, base: int = SYNTHETIC_SEED) -> int:
    """Seed of one synthetic image: fixed per id, whatever order the ids come in."""
    return base * 1_000_003 + zlib.crc32(image_id.encode())


# ---------------------------------------------------------------- data and scoring

def _read_truth(image_id: str, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(semantic mask, instance labels) of one image: the original, or the fixed one with ``fixed``."""
    from napari_litenext.io.images import read_mask

    changed = fixed and image_id in (DSB / "fixes" / "changed_ids.txt").read_text().split()
    root = DSB / "fixes" if changed else DSB
    return read_mask(root / "masks" / f"{image_id}.png"), read_mask(root / "masks_instance" / f"{image_id}.tif")


def items(ids_by_type: Mapping[str, Sequence[str]], fixed: bool = False
          ) -> Iterator[tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]]:
    """(name, types, image, semantic mask, labels) per image, each image once, read lazily.

    ``large-noisy`` ids are the grey source images; they come out as ``large_noisy`` versions
    named ``<id>-large-noisy``.
    """
    from napari_litenext.io.images import read_image

    if fixed:
        removed = set((DSB / "fixes" / "removed_ids.txt").read_text().split())
        ids_by_type = {t: [i for i in ids if i not in removed] for t, ids in ids_by_type.items()}
    real = {}
    for kind, ids in ids_by_type.items():
        if kind not in SYNTHETIC_TYPES:
            for i in ids:
                real.setdefault(i, []).append(kind)
    for i, kinds in real.items():
        yield (i, kinds, read_image(DSB / "images" / f"{i}.png"), *_read_truth(i, fixed))
    for kind, options in SYNTHETIC.items():
        for i in ids_by_type.get(kind, []):
            image, labels = large_noisy(read_image(DSB / "images" / f"{i}.png"), _read_truth(i, fixed)[1],
                                        synthetic_seed(i), **options)
            yield f"{i}-{kind}", [kind], image, labels > 0, labels


def score_items(model: Any, pairs: Iterable[tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]],
                overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per-image rows: name, types, seconds, Dice, F1@0.5, AJI, the other instance scores and errors."""
    from napari_litenext import predict
    from napari_litenext.metrics import binary_scores, instance_errors, instance_scores

    rows = []
    for name, kinds, image, mask, labels in pairs:
        t0 = time.time()
        pred = np.asarray(predict(image, model, **{"instances": True, **(overrides or {})}).labels)
        row = {"name": name, "types": kinds, "seconds": round(time.time() - t0, 2),
               "dice": binary_scores(pred > 0, mask > 0)["dice"], **instance_scores(pred, labels),
               **instance_errors(pred, labels)}
        rows.append(row)
        print(f"  {name[:16]} {'/'.join(kinds):>20s} dice {row['dice']:.3f} f1 {row['f1_50']:.3f} "
              f"aji {row['aji']:.3f} frag {row['fragments']} merge {row['merges']} split {row['splits']} "
              f"missed {row['missed']} ({row['seconds']} s)", file=sys.stderr, flush=True)
    return rows


def summary(rows: Sequence[Mapping[str, Any]], types: Sequence[str]) -> dict[str, dict[str, float]]:
    """Means of ``COLUMNS`` per type (rows whose ``types`` include it) and over all rows (``total``)."""
    out = {}
    for kind in (*types, "total"):
        chosen = [r for r in rows if kind == "total" or kind in r["types"]]
        out[kind] = {"images": len(chosen), **{c: float(np.mean([r[c] for r in chosen])) if chosen else None
                                               for c in COLUMNS}}
    return out


def table(model: str, split: str, means: Mapping[str, Mapping[str, Any]], header: bool = True) -> str:
    """Markdown rows ``| model | split | type | images | Dice | F1@0.5 | AJI | fragments/img | ... |``."""
    lines = ["| model | split | type | images | Dice | F1@0.5 | AJI | fragments/img | merges/img | splits/img "
             "| missed/img |", "|---|---|---|---|---|---|---|---|---|---|---|"] if header else []
    for kind, m in means.items():
        cells = ["-" if m[c] is None else (f"{m[c]:.4f}" if c in ("dice", "f1_50", "aji") else f"{m[c]:.2f}")
                 for c in COLUMNS]
        lines.append(f"| {model} | {split} | {kind} | {m['images']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _parse_sets(items_: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items_:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # e.g. mode=tile
    return out


def _score_split(model: Any, model_name: str, split: str, groups: Mapping[str, Sequence[str]],
                 overrides: Mapping[str, Any], fixed: bool, out: Path, header: bool = True) -> str:
    """Score ``groups`` (type -> ids) of one split, write the JSON, return the table."""
    rows = score_items(model, items(groups, fixed), overrides)
    means = summary(rows, list(groups))
    record = {"model": model_name, "split": split, "fixed_masks": fixed, "overrides": dict(overrides),
              "counts": {t: len(ids) for t, ids in groups.items()}, "means": means, "per_image": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return table(model_name, split, means, header)


# ---------------------------------------------------------------- commands

def cmd_score(args: argparse.Namespace) -> int:
    from napari_litenext import load_model

    groups = split_groups(args.split)
    print(f"{args.split}: " + ", ".join(f"{t} {len(ids)}" for t, ids in groups.items()), file=sys.stderr)
    wanted = args.types or list(groups)
    for kind in SYNTHETIC_TYPES:
        if kind in wanted:
            groups[kind] = groups["grey"]
    missing = [t for t in wanted if t not in groups]
    if missing:
        raise SystemExit(f"no {', '.join(missing)} group in {args.split} (colour is split only when both parts "
                         f"have >= {MIN_GROUP} images); run 'types' for the counts")
    groups = {t: groups[t][:args.limit] if args.limit else groups[t] for t in wanted}
    model = load_model(args.model, device=args.device)
    print(_score_split(model, Path(args.model).stem if Path(args.model).suffix else args.model, args.split,
                       groups, _parse_sets(args.set), args.fixed, Path(args.out)))
    return 0


def cmd_loto(args: argparse.Namespace) -> int:
    split, grey = _metadata()
    ids = {s: split[s] for s in ("train", "val", "test")}
    means = _colour_means([i for s in ids.values() for i in s], grey)
    groups = {s: type_groups(v, grey, means).get(args.type, []) for s, v in ids.items()}
    if not groups["val"] and not groups["test"]:
        raise SystemExit(f"no {args.type} images in val or test; run 'types' for the counts")
    limit = (lambda v: v[:args.limit]) if args.limit else (lambda v: v)
    train_ids = limit([i for i in ids["train"] if i not in set(groups["train"])])
    val_ids = limit([i for i in ids["val"] if i not in set(groups["val"])])
    print(f"leaving out {args.type}: train on {len(train_ids)}, validate on {len(val_ids)} "
          f"(left out {len(groups['train'])} train / {len(groups['val'])} val)", flush=True)
    recipe = {**RECIPES[args.recipe], "init": None, "epochs": args.epochs, "patch_size": args.patch,
              "name": f"loto-{args.type}", "seed": args.seed}
    if args.augment:  # the recipe's schedule with another augmentation: one change at a time
        recipe["augment"] = args.augment
    out = Path(args.out)
    result = run_recipe(recipe, dsb_samples(train_ids), dsb_samples(val_ids), str(out / "run"),
                        overwrite=args.overwrite)
    model = result.load_model()
    name = f"loto-{args.type}-{args.recipe}{'+' + args.augment if args.augment else ''}-e{args.epochs}"
    for i, split_name in enumerate(("val", "test")):
        chosen = limit(groups[split_name])
        if chosen:
            print(_score_split(model, name, split_name, {args.type: chosen}, {}, False,
                               out / f"scores-{split_name}.json", header=i == 0), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("types", help="image counts per type and split")
    s = sub.add_parser("score", help="score a model per image type")
    s.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    s.add_argument("--split", choices=("val", "test"), required=True)
    s.add_argument("--types", nargs="+", choices=REAL_TYPES + SYNTHETIC_TYPES,
                   help="default: the split's real types")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="predict overrides, e.g. min_size=0")
    s.add_argument("--fixed", action="store_true", help="community-fixed masks, removed images left out")
    s.add_argument("--limit", type=int, default=0, help="first N images of each type (0 = all)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True, help="per-image JSON")
    lo = sub.add_parser("loto", help="train without one type, score on it")
    lo.add_argument("--type", choices=REAL_TYPES, required=True)
    lo.add_argument("--recipe", choices=("nuclei", "nuclei-robust"), required=True)
    lo.add_argument("--augment", choices=("robust",), help="replace the recipe's augmentation (ROBUST_AUGMENT)")
    lo.add_argument("--epochs", type=int, required=True)
    lo.add_argument("--patch", type=int, default=128)
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--limit", type=int, default=0, help="first N images of every list (smoke tests)")
    lo.add_argument("--overwrite", action="store_true")
    lo.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.cmd == "types":
        print(types_table())
        return 0
    return cmd_score(args) if args.cmd == "score" else cmd_loto(args)


if __name__ == "__main__":
    sys.exit(main())
