"""Race two ``napari-litenext predict`` runs into one --output, many times, and count what goes wrong.

Each race gets a fresh output folder and starts two real command-line processes at once on the
same small images (copies in two input folders, so that each run's error lines can be told apart),
with ``--threshold 0.3`` and ``--threshold 0.7``, ``--probabilities`` and ``--overlay``, and no
``--overwrite``. Afterwards every image is checked against what each run reported (a run reports an
image written unless one of its error lines names it, or it refused to start):

* replaced: a run reported the image written and its labels file holds the other run's labels
  (replaced without --overwrite);
* mixed: the image's files are not one run's whole set (labels and probabilities from different runs,
  or some of its files missing while others are there);
* lost: a run reported the image written and its labels file is not there.

A run that finds outputs already there when it starts refuses at once (exit status 2,
``runs_refused_at_start``): that race was not contested.

Counts are of images (replaced and lost: of image and run).

The last line printed is JSON with the counts. Run it on another checkout by putting that
checkout's ``src`` first on PYTHONPATH (both the script and the command line then import it).

    .venv/bin/python benchmarks/race_predict.py                 # 50 races, 6 images of 256 x 256 each
    .venv/bin/python benchmarks/race_predict.py --races 5 --images 4 -v
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THRESHOLDS = ("0.3", "0.7")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=50)
    parser.add_argument("--images", type=int, default=6, help="images per race (default 6)")
    parser.add_argument("--size", type=int, default=256, help="image edge in pixels (default 256)")
    parser.add_argument("--work", help="folder for the inputs and outputs (default: a temporary folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per race")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="race-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, inputs = _prepare(work, args.images, args.size)
    totals = {"races": 0, "images": 0, "replaced": 0, "mixed": 0, "lost": 0, "written_by_neither": 0,
              "runs_refused_at_start": 0, "races_with_damage": 0}
    started = time.perf_counter()
    try:
        for race in range(args.races):
            out = work / f"out-{race}"
            counts = _race(out, checkpoint, inputs)
            totals["races"] += 1
            for key, value in counts.items():
                totals[key] += value
            damaged = counts["replaced"] + counts["mixed"] + counts["lost"]
            totals["races_with_damage"] += damaged > 0
            if args.verbose:
                print(f"race {race + 1}: {json.dumps(counts)}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    totals["seconds"] = round(time.perf_counter() - started, 1)
    totals["package"] = str(Path(__import__("napari_litenext").__file__).parent)
    print(json.dumps(totals), flush=True)
    return 0


def _prepare(work: Path, images: int, size: int) -> tuple[Path, dict[str, Path]]:
    import numpy as np
    import torch
    from PIL import Image

    from napari_litenext.config import InferenceConfig, ModelCard
    from napari_litenext.network.checkpoint import save_checkpoint
    from napari_litenext.network.model import LiteNeXt

    torch.manual_seed(0)
    checkpoint = work / "random.pt"
    if not checkpoint.exists():
        save_checkpoint(checkpoint, LiteNeXt(), InferenceConfig(mode="tile", tile_size=64, threshold=0.5),
                        ModelCard(name="random"))
    rng = np.random.default_rng(0)
    inputs = {}
    for threshold in THRESHOLDS:
        folder = work / f"in-{threshold}"
        folder.mkdir(exist_ok=True)
        inputs[threshold] = folder
    for i in range(images):
        pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        for folder in inputs.values():
            Image.fromarray(pixels).save(folder / f"im{i}.png")
    return checkpoint, inputs


def _command() -> list[str]:
    script = Path(sys.executable).parent / "napari-litenext"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from napari_litenext.cli import main; sys.exit(main(sys.argv[1:]))"]


def _race(out: Path, checkpoint: Path, inputs: dict[str, Path]) -> dict[str, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = {t: subprocess.Popen(_command() + ["predict", str(inputs[t]), "-o", str(out), "--model", str(checkpoint),
                                               "-q", "--threshold", t, "--probabilities", "--overlay"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for t in THRESHOLDS}
    errs = {t: p.communicate(timeout=600)[1] for t, p in procs.items()}
    stems = sorted(p.stem for p in inputs[THRESHOLDS[0]].iterdir())
    reported = {}
    refused = 0
    for t, proc in procs.items():
        if proc.returncode not in (0, 1):  # refused at the start (2), or crashed: wrote nothing it reported
            reported[t] = set()
            refused += 1
            continue
        failed = set(re.findall(re.escape(f"error: {inputs[t]}{os.sep}") + r"(\w+)\.png: ", errs[t]))
        reported[t] = set(stems) - failed
    counts = {"images": len(stems), "replaced": 0, "mixed": 0, "lost": 0, "written_by_neither": 0,
              "runs_refused_at_start": refused}
    for stem in stems:
        found = {kind: _threshold(out / f"{stem}{suffix}")
                 for kind, suffix in (("labels", "_labels.tif"), ("prob", "_prob.tif"))}
        overlay = (out / f"{stem}_overlay.png").exists()
        by = [t for t in THRESHOLDS if stem in reported[t]]
        if not by:
            counts["written_by_neither"] += 1
        present = [v for v in found.values() if v is not None] + ([True] if overlay else [])
        values = {v for v in found.values() if v is not None}
        if present and (len(present) != 3 or len(values) != 1):
            counts["mixed"] += 1
        for t in by:
            if found["labels"] is None:
                counts["lost"] += 1
            elif found["labels"] != t:
                counts["replaced"] += 1
    return counts


def _threshold(path: Path) -> str | None:
    """The threshold in a TIFF's settings, None when the file is absent ('?' when unreadable)."""
    import tifffile

    if not path.exists():
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return f"{json.loads(tif.pages[0].description)['threshold']:.1f}"
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
