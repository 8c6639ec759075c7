"""The napari plugin manifest: one file (top-level napari.yaml), installed, discoverable and valid."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = REPO / "napari.yaml"


def test_package_manifest_is_a_symlink_to_the_top_level_file():
    link = REPO / "src" / "napari_litenext" / "napari.yaml"
    assert link.is_symlink(), "src/napari_litenext/napari.yaml must stay a symlink to ../../napari.yaml"
    assert os.readlink(link) == "../../napari.yaml"


def test_installed_manifest_has_the_top_level_bytes():
    installed = importlib.resources.files("napari_litenext").joinpath("napari.yaml")
    assert installed.read_bytes() == TOP_LEVEL.read_bytes()


def test_editable_install_resolves_to_the_top_level_file():
    import napari_litenext

    package_dir = Path(napari_litenext.__file__).resolve().parent
    if package_dir != (REPO / "src" / "napari_litenext").resolve():
        pytest.skip(f"napari_litenext is installed from {package_dir}, not editable from this checkout")
    installed = Path(str(importlib.resources.files("napari_litenext").joinpath("napari.yaml")))
    assert installed.resolve() == TOP_LEVEL.resolve()


def test_entry_point_names_the_manifest():
    (ep,) = [e for e in importlib.metadata.entry_points(group="napari.manifest") if e.name == "napari-litenext"]
    assert ep.value == "napari_litenext:napari.yaml"
    module, _, resource = ep.value.partition(":")
    assert importlib.resources.files(module).joinpath(resource).is_file()


def test_npe2_loads_the_installed_manifest():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-litenext")
    assert manifest.name == "napari-litenext"
    top = PluginManifest.from_file(TOP_LEVEL)
    # Package metadata (version, ...) is added from the distribution; the declared parts must match.
    assert (manifest.display_name, manifest.contributions) == (top.display_name, top.contributions)


def test_every_command_is_importable_and_every_contribution_names_a_declared_command():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(TOP_LEVEL)
    manifest.validate_imports()
    declared = {c.id for c in manifest.contributions.commands}
    contrib = manifest.contributions
    used = [r.command for r in contrib.readers or []] + [w.command for w in contrib.writers or []]
    used += [s.command for s in contrib.sample_data or [] if hasattr(s, "command")]
    used += [w.command for w in contrib.widgets or []]
    assert used and set(used) <= declared
    assert all(c.startswith("napari-litenext.") for c in declared)


def test_manifest_claims_only_ome_tiff_and_zarr_for_reading_and_labels_for_writing():
    data = yaml.safe_load(TOP_LEVEL.read_text())
    tiff, zarr = data["contributions"]["readers"]
    assert sorted(tiff["filename_patterns"]) == ["*.ome.tif", "*.ome.tiff"] and not tiff["accepts_directories"]
    assert zarr["filename_patterns"] == ["*.zarr"] and zarr["accepts_directories"]
    (writer,) = data["contributions"]["writers"]
    assert writer["layer_types"] == ["labels"]


def test_npe2_validate_command_passes():
    exe = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    cmd = [exe] if exe else [sys.executable, "-m", "npe2"]
    result = subprocess.run([*cmd, "validate", "--imports", "napari-litenext"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_wheel_ships_the_top_level_manifest_and_the_sample_data(tmp_path):
    pytest.importorskip("hatchling", reason="install the 'testing' extra to build wheels offline")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_litenext-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("napari_litenext/napari.yaml") == TOP_LEVEL.read_bytes()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[napari.manifest]" in entry_points and "napari_litenext:napari.yaml" in entry_points
    sample_files = sorted(p.relative_to(REPO / "src").as_posix()
                          for p in (REPO / "src" / "napari_litenext" / "sample_data").rglob("*") if p.is_file())
    assert sample_files and set(sample_files) <= names
    models = REPO / "src" / "napari_litenext" / "models"
    shipped_models = {p.relative_to(REPO / "src").as_posix() for p in models.glob("*.pt")} if models.is_dir() else set()
    assert shipped_models <= names
