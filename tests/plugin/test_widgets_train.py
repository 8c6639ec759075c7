"""The Train widget in a real napari viewer: tiny runs (patch 32, a few steps) on painted layers."""

from __future__ import annotations

import numpy as np
import pytest

from _widgets_support import PLUGIN, errors_since, isolated_widget_state, labels_like, notifications, open_widget, \
    skip_without_display, wait_idle  # noqa: F401 (fixtures)

skip_without_display()
pytestmark = pytest.mark.gui

BOXES = [(4, 14, 6, 16), (30, 40, 30, 44), (50, 60, 8, 20)]


@pytest.fixture
def painted(viewer, rng):
    """A 64 x 64 image with three bright boxes and a Labels layer painting them."""
    image = rng.integers(0, 40, (64, 64)).astype(np.uint8)
    labels = labels_like((64, 64), BOXES)
    image[labels > 0] += 150
    return viewer.add_image(image, name="cells"), viewer.add_labels(labels, name="cells painted")


def _train_widget(viewer, tmp_path=None, **recipe):
    widget = open_widget(viewer, "Train")
    settings = dict(epochs=1, patch_size=32, batch_size=2, srp=True)
    settings.update(recipe)
    for name, value in settings.items():
        getattr(widget.recipe, name).value = value
    return widget


def _choose(widget, image, labels, row=0):
    image_box, labels_box = widget.pair_rows()[row]
    image_box.value = image
    labels_box.value = labels


def test_train_widget_opens_from_its_menu_command_with_preset_values(viewer):
    from napari._app_model import get_app_model

    from napari_litenext.training.losses import MWL_PRESETS

    get_app_model().commands.execute_command("napari-litenext.train_widget").result()
    (name,) = [n for n in viewer.window._wrapped_dock_widgets if n.startswith("Train")]
    widget = viewer.window._wrapped_dock_widgets[name].inner_widget()
    r = widget.recipe
    boundary = MWL_PRESETS["boundary"]
    assert (r.w_background.value, r.w_object.value, r.w_margin.value, r.margin_kernel.value) == \
        (boundary["w_b"], boundary["w_o"], boundary["w_m"], boundary["kernel_size"])
    r.mwl_preset.value = "authors-code"
    authors = MWL_PRESETS["authors-code"]
    assert (r.w_background.value, r.w_object.value, r.w_margin.value) == \
        (authors["w_b"], authors["w_o"], authors["w_m"])
    assert not r.w_margin.native.isHidden()
    r.loss.value = "dice_bce"
    assert r.w_margin.native.isHidden() and r.mwl_preset.native.isHidden()


def test_labels_layer_of_the_image_size_is_suggested(viewer, painted):
    image, labels = painted
    viewer.add_labels(np.zeros((10, 10), np.int32), name="other")
    widget = _train_widget(viewer)
    image_box, labels_box = widget.pair_rows()[0]
    image_box.value = image
    assert labels_box.value is labels


def test_trains_a_few_steps_and_the_model_reaches_the_segment_widget(viewer, qtbot, painted, tmp_path):
    image, labels = painted
    widget = _train_widget(viewer, output_folder=tmp_path / "run", model_name="tiny")
    _choose(widget, image, labels)
    before = len(notifications())
    widget.start()
    assert widget.running
    wait_idle(qtbot, widget, timeout=300_000)
    assert errors_since(before) == []
    kinds = [e.kind for e in widget.events]
    assert kinds[:2] == ["data", "start"] and kinds[-1] == "done" and "step" in kinds and "epoch" in kinds
    infos = [m for s, m in notifications()[before:] if s == "info"]
    assert any("training on cpu" in m for m in infos) and any("training finished" in m for m in infos)
    result = widget.result
    assert not result.stopped and result.checkpoint == tmp_path / "run" / "best.pt"
    for name in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (tmp_path / "run" / name).is_file()
    start = next(e for e in widget.events if e.kind == "start")
    assert widget.progress.value == widget.progress.max == start.total_steps
    assert widget.plot.draws > 1 and widget.plot.history[-1]["epoch"] == 1
    # the model is offered by the Segment widget and segments the current image in one click
    viewer.layers.selection.active = image
    segment = widget.segment_current_image()
    assert str(result.checkpoint.resolve()) in segment.settings.model.choices
    wait_idle(qtbot, segment)
    out = viewer.layers["cells labels"]
    assert out.data.shape == (64, 64) and out.metadata["litenext"]["model"] == "tiny"


def test_stop_ends_after_the_current_step_and_keeps_the_best_checkpoint(viewer, qtbot, painted, tmp_path):
    image, labels = painted
    widget = _train_widget(viewer, epochs=200, output_folder=tmp_path / "run")
    _choose(widget, image, labels)
    widget.start()
    widget.worker.yielded.connect(lambda event: event.kind == "step" and widget.stop())
    wait_idle(qtbot, widget, timeout=300_000)
    result = widget.result
    assert result.stopped and widget.events[-1].kind == "stopped"
    steps = [e for e in widget.events if e.kind == "step"]
    assert len(steps) <= 2  # the step in flight when Stop was pressed may still finish
    assert result.checkpoint is not None and result.checkpoint.is_file()
    assert widget.train_button.enabled and not widget.stop_button.enabled


def test_default_output_folder_is_new_and_dated(viewer, qtbot, painted, tmp_path):
    from napari_litenext.plugin.widgets import _train_form

    image, labels = painted
    widget = _train_widget(viewer, model_name="my cells")
    _choose(widget, image, labels)
    widget.start()
    wait_idle(qtbot, widget, timeout=300_000)
    (run,) = list(_train_form.OUTPUT_ROOT.iterdir())
    assert run.name.startswith("my-cells-") and (run / "best.pt").is_file()


def test_stacks_and_several_pairs_and_a_validation_pair(viewer, qtbot, rng, tmp_path):
    stack = rng.integers(0, 255, (3, 48, 48)).astype(np.uint8)
    stack_labels = labels_like((3, 48, 48), [(5, 15, 5, 15)])
    stack_labels[1] = 0  # an unpainted slice is skipped
    flat = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    viewer.add_image(stack, name="stack")
    viewer.add_labels(stack_labels, name="stack labels")
    viewer.add_image(flat, name="rgb", rgb=True)
    viewer.add_labels(labels_like((40, 40), [(2, 12, 2, 12)]), name="rgb labels")
    widget = _train_widget(viewer, output_folder=tmp_path / "run")
    _choose(widget, viewer.layers["stack"], viewer.layers["stack labels"])
    widget.add_pair(viewer.layers["rgb"], viewer.layers["rgb labels"])
    widget.validation.validation.value = "layers"
    widget.val_image.value = viewer.layers["rgb"]
    widget.val_labels.value = viewer.layers["rgb labels"]
    train, val, note = widget.collect_samples()
    assert [s.name for s in train] == ["'stack' / 'stack labels' [slice 0]", "'stack' / 'stack labels' [slice 2]",
                                       "'rgb' / 'rgb labels'"]
    assert len(val) == 1 and note == ""
    widget.start()
    wait_idle(qtbot, widget, timeout=300_000)
    assert widget.result is not None and widget.result.checkpoint.is_file()


def test_folders_as_the_training_source(viewer, qtbot, tmp_path, rng):
    from napari_litenext.io.images import write_tiff

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        image = rng.integers(0, 255, (40, 40)).astype(np.uint8)
        write_tiff(tmp_path / "images" / f"im{i}.tif", image)
        write_tiff(tmp_path / "masks" / f"im{i}_mask.tif", labels_like((40, 40), [(5, 15, 5, 15 + i)]).astype(np.uint8))
    widget = _train_widget(viewer, output_folder=tmp_path / "run")
    widget.source.source.value = "folders"
    assert widget.pairs_box.native.isHidden() and not widget.source.images_folder.native.isHidden()
    widget.source.images_folder.value = tmp_path / "images"
    widget.source.masks_folder.value = tmp_path / "masks"
    widget.validation.validation.value = "fraction"
    widget.validation.val_fraction.value = 0.3
    train, val, _ = widget.collect_samples()
    assert len(train) == 2 and len(val) == 1
    widget.start()
    assert widget.status.value == "reading the images..."  # in the worker, not the GUI thread
    wait_idle(qtbot, widget, timeout=300_000)
    assert widget.result.checkpoint.is_file()


@pytest.mark.parametrize("case", ["no labels", "shape mismatch", "empty labels", "existing run", "bad patch"])
def test_bad_input_shows_an_error_and_changes_nothing(viewer, qtbot, painted, tmp_path, case):
    image, labels = painted
    out = tmp_path / "run"
    widget = _train_widget(viewer, output_folder=out)
    if case == "no labels":
        viewer.layers.remove(labels)
        widget.pair_rows()[0][0].value = image
    elif case == "shape mismatch":
        _choose(widget, image, viewer.add_labels(np.ones((32, 64), np.int32), name="wrong size"))
    elif case == "empty labels":
        _choose(widget, image, viewer.add_labels(np.zeros((64, 64), np.int32), name="blank"))
    else:
        _choose(widget, image, labels)
    if case == "existing run":
        out.mkdir()
        (out / "best.pt").write_bytes(b"precious")
    if case == "bad patch":
        widget.recipe.patch_size.value = 40  # not a multiple of 16
    names = [l.name for l in viewer.layers]
    before = len(notifications())
    widget.start()
    assert not widget.running
    errors = errors_since(before)
    assert len(errors) == 1 and errors[0].startswith("LiteNeXt Train")
    assert {"no labels": "pair 1 has no Labels layer", "shape mismatch": "64 x 64 pixels but labels are 32 x 64",
            "empty labels": "labels are empty", "existing run": "already holds a run",
            "bad patch": "multiple of 16"}[case] in errors[0]
    assert [l.name for l in viewer.layers] == names
    if case == "existing run":
        assert (out / "best.pt").read_bytes() == b"precious" and sorted(p.name for p in out.iterdir()) == ["best.pt"]
    else:
        assert not out.exists()


def test_data_errors_found_in_the_worker_are_notified(viewer, qtbot, painted, tmp_path):
    image, labels = painted
    widget = _train_widget(viewer, output_folder=tmp_path / "run", patch_size=128)  # larger than the image
    _choose(widget, image, labels)
    before = len(notifications())
    widget.start()
    wait_idle(qtbot, widget, timeout=60_000)
    errors = errors_since(before)
    assert len(errors) == 1 and "patch size 128 is larger" in errors[0]
    assert widget.result is None and not (tmp_path / "run" / "best.pt").exists()


def test_settings_persist_between_widgets(viewer, qtbot):
    import pickle

    from napari_litenext.plugin.widgets.train import TrainWidget

    widget = _train_widget(viewer)
    qtbot.wait(300)
    widget.recipe.epochs.value = 7
    widget.recipe.learning_rate.value = 0.0003
    # magicgui writes settings 0.2 s after the last change, with one timer for all its forms: a change
    # to another form within 0.2 s would replace this one's pending write (a person is never that quick)
    qtbot.wait(300)
    widget.validation.val_fraction.value = 0.35

    def saved(gui, key):
        try:  # the file may be caught half-written: magicgui writes it from a timer thread
            return pickle.loads(pickle.loads(gui._dump_path.read_bytes())[key])
        except (OSError, EOFError, pickle.UnpicklingError, KeyError):
            return None

    qtbot.waitUntil(lambda: saved(widget.recipe, "epochs") == 7 and saved(widget.validation, "val_fraction") == 0.35,
                    timeout=10_000)

    again = TrainWidget(viewer)
    try:
        assert again.recipe.epochs.value == 7
        assert again.recipe.learning_rate.value == pytest.approx(0.0003)
        assert again.validation.val_fraction.value == pytest.approx(0.35)
    finally:
        again.close()
        again.deleteLater()


def test_fine_tuning_shows_the_starting_models_settings_and_inherits_them(viewer, qtbot, painted, tmp_path,
                                                                            random_checkpoint):
    # random.pt: tile mode, 256 px input, dtype normalisation (InferenceConfig defaults but the mode)
    image, labels = painted
    widget = _train_widget(viewer, output_folder=tmp_path / "run", normalisation="minmax", mode="resize")
    widget.recipe.start_from.value = "<file>"
    assert not widget.recipe.start_file.native.isHidden()
    widget.recipe.start_file.value = random_checkpoint
    qtbot.waitUntil(lambda: widget.start_values.source == str(random_checkpoint), timeout=30_000)
    r = widget.recipe
    assert (r.normalisation.value, r.mode.value, r.patch_size.value) == ("dtype", "tile", 256)
    r.patch_size.value = 32  # the one setting changed by the user after the model's were shown
    cfg = widget.build_config(tmp_path / "unused")
    assert (cfg.patch_size, cfg.mode, cfg.normalisation) == (32, None, None)
    _choose(widget, image, labels)
    widget.start()
    wait_idle(qtbot, widget, timeout=300_000)
    from napari_litenext.network.checkpoint import load_checkpoint

    inference = load_checkpoint(widget.result.checkpoint).inference
    assert (inference.normalisation, inference.mode, inference.input_size, inference.tile_size) == \
        ("dtype", "tile", 32, 64)


def test_a_changed_loss_weight_reaches_the_loss(viewer, qtbot, painted, tmp_path, monkeypatch):
    import napari_litenext.training.losses as losses

    seen = []
    original = losses.margin_weight_map
    monkeypatch.setattr(losses, "margin_weight_map",
                        lambda mask, k, w_b, w_o, w_m: seen.append((k, w_b, w_o, w_m)) or original(mask, k, w_b, w_o, w_m))
    image, labels = painted
    widget = _train_widget(viewer, output_folder=tmp_path / "run", srp=False, loss="mwl", mwl_preset="boundary")
    widget.recipe.w_margin.value = 8.5
    _choose(widget, image, labels)
    widget.start()
    wait_idle(qtbot, widget, timeout=300_000)
    assert seen and set(seen) == {(7, 1.0, 3.0, 8.5)}
    from napari_litenext.network.checkpoint import load_checkpoint

    ckpt = load_checkpoint(widget.result.checkpoint)
    assert ckpt.extra["train_config"]["loss"]["w_m"] == 8.5 and "changed w_m" in ckpt.card.recipe


def test_closing_the_dock_stops_training(viewer, qtbot, painted, tmp_path):
    image, labels = painted
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    for name, value in dict(epochs=500, patch_size=32, batch_size=2, output_folder=tmp_path / "run").items():
        getattr(widget.recipe, name).value = value
    _choose(widget, image, labels)
    widget.start()
    worker = widget.worker
    qtbot.waitUntil(lambda: any(e.kind == "step" for e in widget.events), timeout=60_000)
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert (tmp_path / "run" / "best.pt").is_file()  # stopped the normal way: validated and saved
