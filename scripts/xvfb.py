"""Re-run the calling script inside a virtual X server when there is no display.

Shared by the scripts and benchmarks that open napari windows (scripts/screenshots.py,
benchmarks/bench_gui_latency.py). Qt runs on its xcb platform there: ``offscreen`` cannot draw layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# Set in the re-run, so that it does not start yet another server.
_MARKER = "LITENEXT_UNDER_XVFB"


def ensure_display() -> None:
    """Return when a display is available; otherwise run this script again under ``xvfb-run`` and exit."""
    if os.environ.get("DISPLAY") or os.environ.get(_MARKER):
        return
    if shutil.which("xvfb-run") is None:
        sys.exit("no display and no xvfb-run: run scripts/setup.sh --gui first, or run under a desktop session")
    env = dict(os.environ, **{_MARKER: "1"}, QT_QPA_PLATFORM="xcb")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1200x24 -nolisten tcp", sys.executable,
           str(Path(sys.argv[0]).resolve()), *sys.argv[1:]]
    sys.exit(subprocess.call(cmd, env=env))
