"""Take the user guide's screenshots from a running napari viewer.

    python scripts/screenshots.py [--model nuclei] [--epochs 12] [--out docs/images]

Opens napari (under ``xvfb-run`` when there is no display), loads the DSB fluorescence sample,
trains a small model in the Train widget on the sample's ground truth (the live curves), segments
the sample in the Segment widget with ``--model`` (a bundled name or checkpoint path; default the
bundled ``nuclei`` model, else the model just trained), scores the result in the Evaluate widget, and
writes:

    segment.png    the viewer: image, labels and the Segment widget
    train.png      the Train widget after its run
    evaluate.png   the Evaluate widget's table
    share-export.png   the Train widget after exporting its model as a BioImage Model Zoo package
    share-import.png   the viewer segmenting with that package, chosen as the Segment widget's model

PNGs are palette-quantised to stay small. Settings the widgets remember are kept in a temporary
folder, so the user's own remembered settings are untouched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from xvfb import ensure_display  # noqa: E402  (scripts folder)


def _wait(app, condition, timeout: float = 900.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.01)


def _settle(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _dismiss_notifications(viewer) -> None:
    """Close the notification pop-ups still on screen (they would cover the picture)."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # napari moved it: keep the pop-ups
        return
    for popup in viewer.window._qt_window.findChildren(NapariQtNotification):
        popup.close()


def _save(picture, path: Path, colours: int = 256) -> None:
    """Write a palette PNG (small) from an RGB(A) array or a QPixmap."""
    import numpy as np
    from PIL import Image

    if hasattr(picture, "save"):  # QPixmap: through a temporary PNG
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "raw.png"
            picture.save(str(raw))
            image = Image.open(raw).convert("RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(picture)[..., :3])
    image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def _screenshot_package(app, viewer, segment, image, package: Path, path: Path) -> None:
    """The viewer after segmenting with an exported package chosen as a file in the Segment widget."""
    segment.select_model(package)
    _wait(app, lambda: segment.model_values.source == str(package))
    segment.run()
    _wait(app, lambda: segment.worker is None)
    if segment.last_error:
        sys.exit(f"segmentation with the package failed: {segment.last_error}")
    _dismiss_notifications(viewer)
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), path)


def main() -> int:
    parser = argparse.ArgumentParser(description="Take the user guide's screenshots.")
    parser.add_argument("--model", help="bundled model name or checkpoint for the Segment screenshot")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the Train widget's demonstration run")
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = parser.parse_args()
    ensure_display()

    import magicgui._util
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_litenext.network.registry import bundled_models

    tmp = Path(tempfile.mkdtemp(prefix="litenext-screens-"))
    magicgui._util.user_cache_dir = lambda *a, **k: tmp / "settings"
    out = Path(args.out)
    viewer = napari.Viewer(show=True, title="napari-litenext")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 980)
    image, truth = viewer.open_sample("napari-litenext", "fluorescence")
    truth.visible = False
    _settle(app)

    # Train: the sample's ground truth as the painted labels, validated on the training pair.
    _, train = viewer.window.add_plugin_dock_widget("napari-litenext", "Train")
    r = train.recipe
    r.model_name.value = "sample-demo"
    r.epochs.value, r.batch_size.value, r.patch_size.value = args.epochs, 8, 96
    r.learning_rate.value, r.mode.value = 0.003, "tile"
    r.output_folder.value = tmp / "run"
    train.validation.validation.value = "train"
    image_box, labels_box = train.pair_rows()[0]
    image_box.value, labels_box.value = image, truth
    train.start()
    _wait(app, lambda: train.worker is None)
    if train.result is None:
        sys.exit(f"training failed: {train.last_error}")
    _settle(app)
    _save(train.grab(), out / "train.png")
    package = tmp / "sample-demo.zip"
    train.export_model(package)
    _wait(app, lambda: train.export_worker is None)
    if train.last_error:
        sys.exit(f"export failed: {train.last_error}")
    _dismiss_notifications(viewer)
    _settle(app)
    _save(train.grab(), out / "share-export.png")

    # Segment with a bundled model if there is one, else with the model just trained.
    viewer.window.remove_dock_widget("all")
    _, segment = viewer.window.add_plugin_dock_widget("napari-litenext", "Segment")
    source = args.model or ("nuclei" if "nuclei" in bundled_models() else str(train.result.checkpoint))
    segment.select_model(source)
    segment.image.value = image
    segment.settings.instances.value = True
    segment.settings.min_size.value = 10
    segment.settings.threshold.value = 0.5
    segment.run()
    _wait(app, lambda: segment.worker is None)
    if segment.last_error:
        sys.exit(f"segmentation failed: {segment.last_error}")
    viewer.layers.selection.active = viewer.layers[f"{image.name} labels"]
    viewer.reset_view()
    _dismiss_notifications(viewer)
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "segment.png")
    _screenshot_package(app, viewer, segment, image, package, out / "share-import.png")

    # Evaluate the labels against the sample's ground truth.
    _, evaluate = viewer.window.add_plugin_dock_widget("napari-litenext", "Evaluate")
    evaluate.prediction.value = viewer.layers[f"{image.name} labels"]
    evaluate.ground_truth.value = truth
    evaluate.settings.source.value = "layers"
    evaluate.settings.instances.value = True
    evaluate.run()
    _wait(app, lambda: evaluate.worker is None)
    _settle(app)
    evaluate.table.resizeColumnsToContents()
    table_width = sum(evaluate.table.columnWidth(c) for c in range(evaluate.table.columnCount()))
    evaluate.resize(table_width + 40, 420)
    _settle(app)
    _save(evaluate.grab(), out / "evaluate.png")
    print(f"segmented with {source}; Evaluate: {evaluate.status.value}")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
