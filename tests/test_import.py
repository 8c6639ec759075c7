"""Importing the package (as napari does at start-up) stays light: no torch, no Qt, no napari.

Each check runs in a fresh interpreter, since this test process has long since imported all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")

PROBE = """
import json, sys, time
t0 = time.perf_counter()
{statement}
elapsed = time.perf_counter() - t0
print(json.dumps({{"elapsed": elapsed,
                  "heavy": sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))}}))
"""


def _probe(statement: str) -> dict:
    code = PROBE.format(statement=statement, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_pulls_in_no_torch_qt_or_napari():
    out = _probe("import napari_litenext")
    assert out["heavy"] == []


@pytest.mark.parametrize("module", ["plugin.reader", "plugin.writer", "plugin.sample_data", "config"])
def test_napari_hook_modules_import_without_torch_or_qt(module):
    # napari imports these to read, write or open samples; torch would cost seconds each time.
    out = _probe(f"import napari_litenext.{module}")
    assert out["heavy"] == []


def test_import_is_fast():
    # Best of three to ride out a busy machine; a torch import alone takes over a second.
    best = min(_probe("import napari_litenext")["elapsed"] for _ in range(3))
    assert best < 0.5, f"import napari_litenext took {best:.3f} s"


def test_public_names_resolve_lazily():
    out = _probe("import napari_litenext as nl; nl.ModelConfig; nl.InferenceConfig")
    assert out["heavy"] == []
