"""Ablation of the two training ideas: Dice+BCE vs +MWL vs +SRP vs both, on DSB 2018 and PH2.

    python scripts/ablation.py run ph2 --variant both --epochs 40 --out runs/ablation
    python scripts/ablation.py table --out runs/ablation > docs/ablation-table.md

Each variant trains with the same data, seed, epochs and schedule; the checkpoint is chosen on
the validation split, then scored once on the test split under the paper's protocol (256 x 256,
per image, threshold 0.5, empty ground truth skipped). Results go to <out>/<dataset>-<variant>-s<seed>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# LossConfig settings of each variant
VARIANTS = {
    "dice_bce": dict(loss="dice_bce", srp=False),
    "mwl": dict(loss="mwl", preset="boundary", srp=False),
    "srp": dict(loss="dice_bce", srp=True),
    "both": dict(loss="mwl", preset="boundary", srp=True),
}
# Budget-sized settings shared by every variant of a dataset (CPU: 2 cores).
SETTINGS = {
    "ph2": dict(mode="resize", patch_size=128, normalisation="dtype", batch_size=8, lr=1e-3, lr_step=0),
    "dsb2018": dict(mode="resize", patch_size=128, normalisation="percentile", batch_size=8, lr=1e-3, lr_step=0),
    # The bundled nuclei model's setting: native-resolution patches (here 128 px).
    "dsb2018-tile": dict(mode="tile", patch_size=128, normalisation="percentile", batch_size=8, lr=1e-3,
                         lr_step=0, max_patches_per_image=4),
}
DATA = {"ph2": "ph2", "dsb2018": "dsb2018", "dsb2018-tile": "dsb2018"}


def run(args) -> int:
    import torch

    from export_bundled import evaluate_run  # noqa: E402  (scripts folder)
    from train_bundled import dsb_samples, ph2_samples, SHARED

    from napari_litenext.progress import run_to_end
    from napari_litenext.training.config import LossConfig
    from napari_litenext.training.loop import TrainConfig, train

    torch.set_num_threads(args.threads)
    data = DATA[args.dataset]
    split = json.loads((SHARED / "data" / data / "split.json").read_text())
    load = dsb_samples if data == "dsb2018" else ph2_samples
    tr, va = load(split["train"]), load(split["val"])
    out = Path(args.out)
    run_dir = out / f"{args.dataset}-{args.variant}-s{args.seed}"
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, output_dir=str(run_dir), overwrite=True,
                      name=f"ablation-{args.variant}", loss=LossConfig(**VARIANTS[args.variant]),
                      **SETTINGS[args.dataset])
    t0 = time.time()

    def show(event) -> None:
        if event.kind == "epoch":
            print(f"{args.dataset} {args.variant} epoch {event.epoch}: loss {event.loss:.4f} val {event.val_dice}",
                  flush=True)

    result = run_to_end(train(tr, va, cfg), show)
    minutes = (time.time() - t0) / 60
    model = result.load_model()
    kind = "nuclei" if data == "dsb2018" else "skin-lesion"
    test = evaluate_run(kind, model, paper_only=args.dataset != "dsb2018-tile")
    record = {"dataset": args.dataset, "variant": args.variant, "seed": args.seed, "epochs": args.epochs,
              "best_epoch": result.best_epoch, "val_dice": result.best_val_dice,
              "test_dice_paper": test["paper_protocol"]["dice"], "minutes": round(minutes, 1),
              "test_dice_native": test["native"]["dice"] if "native" in test else None,
              "test_f1_50": test["instances"]["f1_50"] if "instances" in test else None,
              "settings": {**SETTINGS[args.dataset], **VARIANTS[args.variant]}}
    (out / f"{args.dataset}-{args.variant}-s{args.seed}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record))
    return 0


def table(args) -> int:
    rows = [json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*.json"))]
    names = {"dice_bce": "Dice + BCE", "mwl": "+ MWL (boundary)", "srp": "+ SRP", "both": "+ MWL + SRP"}
    print("| dataset, setting | variant | seed | epochs | best epoch | val Dice | test Dice (paper protocol) | "
          "test Dice (native) | test F1@0.5 | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in sorted(rows, key=lambda r: (r["dataset"], list(VARIANTS).index(r["variant"]), r["seed"])):
        print(f"| {_setting_label(r['dataset'])} | {names[r['variant']]} | {r['seed']} | {r['epochs']} | "
              f"{r['best_epoch']} | {r['val_dice']:.4f} | {fmt(r['test_dice_paper'])} | "
              f"{fmt(r.get('test_dice_native'))} | {fmt(r.get('test_f1_50'))} | {r['minutes']} |")
    _print_means(rows, names)
    return 0


def _setting_label(dataset: str) -> str:
    """E.g. "dsb2018, tile 128 px": the data and how the network sees it."""
    setting = SETTINGS[dataset]
    return f"{DATA[dataset]}, {setting['mode']} {setting['patch_size']} px"


def _print_means(rows: list[dict], names: dict[str, str]) -> None:
    """Mean test Dice (paper protocol) over seeds, and the change from Dice + BCE, per setting."""
    import statistics

    print("\n| dataset, setting | variant | seeds | mean test Dice (paper) | vs Dice + BCE |")
    print("|---|---|---|---|---|")
    for dataset in sorted({r["dataset"] for r in rows}):
        label = _setting_label(dataset)
        means = {}
        for variant in VARIANTS:
            scores = [r["test_dice_paper"] for r in rows if r["dataset"] == dataset and r["variant"] == variant]
            if scores:
                means[variant] = (statistics.mean(scores), len(scores))
        base = means.get("dice_bce", (None, 0))[0]
        for variant, (mean, n) in means.items():
            delta = "-" if base is None or variant == "dice_bce" else f"{mean - base:+.4f}"
            print(f"| {label} | {names[variant]} | {n} | {mean:.4f} | {delta} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("dataset", choices=sorted(SETTINGS))
    r.add_argument("--variant", choices=list(VARIANTS), required=True)
    r.add_argument("--epochs", type=int, default=40)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", default="runs/ablation")
    t = sub.add_parser("table")
    t.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()
    return run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
