#!/usr/bin/env bash
# napari-litenext's main job on bundled defaults: segment the bundled DSB 2018 sample images with
# the bundled nuclei model, writing instance labels (TIFF) and overlays (PNG).
#
#   scripts/demo.sh
#
# Every run writes to a new folder, litenext-output/<date>-<time>[-N]/ in the checkout (or under
# $LITENEXT_DEMO_OUTPUT), so earlier results are never overwritten. The samples ship with their
# ground truth, so the demo ends by scoring the model on them (scores.json in the same folder).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$REPO/scripts/setup.sh"

PY="$REPO/.venv/bin/python"
CLI="$REPO/.venv/bin/napari-litenext"
OUT_ROOT="${LITENEXT_DEMO_OUTPUT:-$REPO/litenext-output}"
mkdir -p "$OUT_ROOT"
OUT="$OUT_ROOT/$(date +%Y%m%d-%H%M%S)"
n=1
base="$OUT"
while ! mkdir "$OUT" 2>/dev/null; do  # mkdir fails if the folder exists: never reuse one
  n=$((n + 1))
  OUT="$base-$n"
done

mapfile -t IMAGES < <("$PY" -c 'from napari_litenext.plugin.sample_data import sample_image_paths
print("\n".join(str(p) for p in sample_image_paths()))')

MODEL=nuclei
SAMPLES=$(dirname "$(dirname "${IMAGES[0]}")")  # sample_data/{images,labels}

echo "Segmenting ${#IMAGES[@]} bundled sample images with model '$MODEL' ..."
"$CLI" predict "${IMAGES[@]}" --output "$OUT" --model "$MODEL" --instances --overlay

echo
echo "Scoring the model against the samples' ground-truth labels ..."
"$CLI" evaluate --model "$MODEL" --images "$SAMPLES/images" --masks "$SAMPLES/labels" --instances \
  --json "$OUT/scores.json"

echo
echo "Results written to $OUT/:"
(cd "$OUT" && ls -1)
echo "Each <image>_labels.tif holds one id per nucleus (0 = background); <image>_overlay.png shows them on the"
echo "image; scores.json has the scores above per image."
