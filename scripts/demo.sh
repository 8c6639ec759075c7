#!/usr/bin/env bash
# napari-litenext's main job on bundled defaults: segment the bundled DSB 2018 sample images with
# the bundled nuclei model, writing instance labels (TIFF) and overlays (PNG).
#
#   scripts/demo.sh
#
# Every run writes to a new folder, litenext-output/<date>-<time>[-N]/ in the checkout (or under
# $LITENEXT_DEMO_OUTPUT), so earlier results are never overwritten. Until the package ships a
# trained model (src/napari_litenext/models/nuclei.pt), the demo makes an UNTRAINED model with
# random weights so the whole pipeline can still be tried; its masks are meaningless.
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

mapfile -t IMAGES < <("$PY" -c 'from napari_litenext._sample_data import sample_image_paths
print("\n".join(str(p) for p in sample_image_paths()))')

UNTRAINED=0
if [ -f "$REPO/src/napari_litenext/models/nuclei.pt" ]; then
  MODEL=nuclei
else
  UNTRAINED=1
  MODEL="$OUT/untrained-litenext.pt"
  "$PY" "$REPO/scripts/make_untrained_model.py" "$MODEL"
  cat >&2 <<'BANNER'
################################################################################
#  NO TRAINED MODEL IS BUNDLED YET (src/napari_litenext/models/nuclei.pt).      #
#  This demo uses an UNTRAINED LiteNeXt with random weights (model "untrained") #
#  to show the pipeline end to end. ITS MASKS ARE MEANINGLESS.                  #
################################################################################
BANNER
fi

echo "Segmenting ${#IMAGES[@]} bundled sample images with model '$MODEL' ..."
"$CLI" predict "${IMAGES[@]}" --output "$OUT" --model "$MODEL" --instances --overlay

echo
echo "Results written to $OUT/:"
(cd "$OUT" && ls -1)
if [ "$UNTRAINED" = 1 ]; then
  echo "NOTE: made with an UNTRAINED model (random weights): the masks are not a segmentation."
fi
echo "Each <image>_labels.tif holds one id per nucleus (0 = background); <image>_overlay.png shows them on the image."
