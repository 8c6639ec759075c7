#!/usr/bin/env bash
# Run napari-litenext's full test suite: set-up (scripts/setup.sh --gui), then pytest under a
# virtual X server so that the GUI tests draw real napari windows.
#
#   scripts/test.sh                      every test
#   scripts/test.sh tests/plugin/test_reader.py -q   arguments go to pytest
#
# Qt runs on its xcb platform inside Xvfb (QT_QPA_PLATFORM=offscreen cannot draw layers).
# LITENEXT_USE_DISPLAY=1 runs on the current $DISPLAY instead of a new Xvfb.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$REPO/scripts/setup.sh" --gui

cd "$REPO"
export QT_QPA_PLATFORM=xcb
PYTEST=("$REPO/.venv/bin/python" -m pytest "$@")
if [ "${LITENEXT_USE_DISPLAY:-0}" = 1 ] && [ -n "${DISPLAY:-}" ]; then
  exec "${PYTEST[@]}"
fi
# -a: first free display number; 24-bit colour so that screenshots compare as RGB.
exec xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" "${PYTEST[@]}"
