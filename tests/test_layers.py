"""The package's layers (docs/architecture.md): each module imports only its own layer and those below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_litenext"

# Lowest first. A module may import modules of its own rank or lower, never higher.
RANKS = {
    "errors": 0, "progress": 0, "config": 0, "metrics": 0, "io": 0,
    "network": 1, "exchange": 1,
    "inference": 2,
    "training": 3,
    "cli": 4, "plugin": 4,
    "plugin.widgets": 5,
}
GUI_PACKAGES = ("napari", "magicgui", "qtpy", "superqt", "psygnal")


def _layer(module: str) -> str:
    """'napari_litenext.plugin.widgets.train' -> 'plugin.widgets'; '...inference.predict' -> 'inference'."""
    parts = module.split(".")[1:]
    if parts[:2] == ["plugin", "widgets"]:
        return "plugin.widgets"
    return parts[0] if parts else "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, path


def _imports(module: str, is_package: bool, path: Path):
    """Absolute names of everything ``path`` imports, at module level or inside functions."""
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            # "from . import x" may name a submodule
            yield from (f"{target}.{alias.name}" for alias in node.names)


MODULES = list(_modules())


@pytest.mark.parametrize("module, is_package, path", MODULES, ids=[m for m, _, _ in MODULES])
def test_imports_point_down_the_layers(module, is_package, path):
    layer = _layer(module)
    if layer == "__init__":
        return  # the package's lazy public names may come from any layer
    rank = RANKS[layer]
    upward = sorted({name for name in _imports(module, is_package, path)
                     if name.startswith("napari_litenext.") and _layer(name) in RANKS
                     and RANKS[_layer(name)] > rank})
    assert upward == [], f"{module} ({layer}) imports higher layers: {upward}"


@pytest.mark.parametrize("module, is_package, path", MODULES, ids=[m for m, _, _ in MODULES])
def test_only_the_widgets_import_napari_or_qt(module, is_package, path):
    if _layer(module) == "plugin.widgets":
        return
    gui = sorted({name for name in _imports(module, is_package, path) if name.split(".")[0] in GUI_PACKAGES})
    assert gui == [], f"{module} imports {gui}"


def test_every_layer_is_known():
    assert {_layer(m) for m, _, _ in MODULES} - {"__init__"} <= set(RANKS)
