import dataclasses

import numpy as np
import pytest
import torch

from napari_litenext.progress import run_to_end
from napari_litenext.training.config import AugmentConfig, LossConfig
from napari_litenext.network.checkpoint import load_checkpoint
from napari_litenext.config import ModelConfig
from napari_litenext.training.data import DataError, samples_from_arrays
from napari_litenext.network.model import LiteNeXt
from napari_litenext.training.loop import TrainConfig, train

SMALL = ModelConfig(base_width=4, fusion_dim=8)


def _discs(n, size=48, seed=0):
    rng = np.random.default_rng(seed)
    images, masks = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(3):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(3, 7)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images.append((mask * 180 + rng.integers(0, 60, mask.shape)).astype(np.uint8))
        masks.append(mask)
    return samples_from_arrays(images, masks)


def _run(samples, val, cfg, should_stop=None):
    events = []
    result = run_to_end(train(samples, val, cfg, should_stop), events.append)
    return events, result


def _cfg(tmp_path=None, **kw):
    base = dict(epochs=2, batch_size=4, patch_size=32, mode="tile", loss=LossConfig(srp=False), lr=3e-3,
                device="cpu", model=SMALL, output_dir=str(tmp_path) if tmp_path else None)
    base.update(kw)
    return TrainConfig(**base)


def test_events_checkpoints_and_history(tmp_path):
    events, result = _run(_discs(6), _discs(2, seed=1), _cfg(tmp_path))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and "cpu" in events[0].message
    assert kinds[-1] == "done" and kinds.count("epoch") == 2
    steps = [e for e in events if e.kind == "step"]
    assert steps[-1].global_step == steps[-1].total_steps and steps[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert all(e.loss > 0 for e in steps)
    assert result.checkpoint == tmp_path / "best.pt" and (tmp_path / "last.pt").exists()
    assert len(result.history) == 2 and result.history[-1]["val_dice"] is not None
    csv_lines = (tmp_path / "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step,lr,loss") and len(csv_lines) == 3
    model = result.load_model()
    assert model.inference.mode == "tile" and model.card.metrics["val_dice"] == round(result.best_val_dice, 4)


def test_srp_checkpoint_holds_only_the_segmentation_network(tmp_path):
    cfg = _cfg(tmp_path, model=ModelConfig(), loss=LossConfig(srp=True), epochs=1, batch_size=2)
    _, result = _run(_discs(2, size=32), None, cfg)
    ckpt = load_checkpoint(result.checkpoint)
    assert set(ckpt.state_dict) == set(LiteNeXt().state_dict())
    assert sum(t.numel() for t in ckpt.state_dict.values()) == 711_201
    assert result.history[0]["loss_rep"] is not None


@pytest.mark.slow
def test_learns_bright_discs():
    # A real learning check: 32 steps take validation Dice from 0 to about 0.89 (seeded).
    torch.manual_seed(0)
    cfg = _cfg(None, epochs=8, batch_size=2, lr=3e-3, patch_size=48, normalisation="minmax",
               augment=AugmentConfig(enabled=False), loss=LossConfig(loss="dice_bce", srp=False),
               model=ModelConfig(base_width=8, fusion_dim=16))
    _, result = _run(_discs(8), _discs(3, seed=5), cfg)
    assert result.history[0]["val_dice"] < 0.5
    assert result.best_val_dice > 0.8, result.history


def test_stop_between_steps_keeps_best(tmp_path):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 2

    events, result = _run(_discs(8), _discs(2, seed=1), _cfg(tmp_path, epochs=5, batch_size=2), stop)
    assert events[-1].kind == "stopped" and result.stopped
    assert sum(e.kind == "step" for e in events) == 2
    assert result.checkpoint is not None and result.checkpoint.exists()


def test_resume_continues_epochs(tmp_path):
    _run(_discs(4), _discs(2, seed=1), _cfg(tmp_path, epochs=1))
    events, result = _run(_discs(4), _discs(2, seed=1), _cfg(tmp_path, epochs=2, resume=True))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert events[0].global_step == events[0].steps_per_epoch


def test_refuses_to_overwrite_a_model(tmp_path):
    _run(_discs(4), None, _cfg(tmp_path, epochs=1))
    with pytest.raises(DataError, match="already holds best.pt"):
        _run(_discs(4), None, _cfg(tmp_path, epochs=1))
    with pytest.raises(DataError, match="cannot resume"):
        _run(_discs(4), None, _cfg(tmp_path / "new", epochs=1, resume=True))


def test_same_seed_same_losses():
    losses = []
    for _ in range(2):
        events, _ = _run(_discs(4), None, _cfg(None, epochs=1, seed=7))
        losses.append([e.loss for e in events if e.kind == "step"])
    assert losses[0] == losses[1]


def test_step_decay_of_learning_rate():
    events, _ = _run(_discs(2), None, _cfg(None, epochs=3, lr_step=1, lr_gamma=0.5, lr=1e-3))
    assert [e.lr for e in events if e.kind == "epoch"] == [1e-3, 5e-4, 2.5e-4]


@pytest.mark.parametrize("kwargs,needle", [
    (dict(epochs=0), "epochs"), (dict(patch_size=20), "multiple of 16"), (dict(mode="zoom"), "mode"),
    (dict(resize_mix=2.0), "resize_mix"), (dict(threshold=1.0), "threshold"),
])
def test_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        _cfg(None, **kwargs)


def test_out_of_memory_says_how_to_reduce(monkeypatch, tmp_path):
    import napari_litenext.training.loop as training

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(training, "_step", oom)
    with pytest.raises(RuntimeError, match="halve the batch size"):
        _run(_discs(2), None, _cfg(tmp_path, epochs=1))
    assert not (tmp_path / "best.pt").exists()


def test_nan_images_are_refused_before_training(tmp_path):
    from napari_litenext.inference.preprocess import InputError

    samples = _discs(2)
    samples[1].image = samples[1].image.astype(np.float32)
    samples[1].image[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        _run(samples, None, _cfg(tmp_path, epochs=1))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- settings resolved in the core

def _start_model(tmp_path, **inference):
    from napari_litenext.config import InferenceConfig, ModelCard
    from napari_litenext.network.checkpoint import save_checkpoint

    path = tmp_path / "start.pt"
    torch.manual_seed(1)
    save_checkpoint(path, LiteNeXt(SMALL), InferenceConfig(**inference), ModelCard(name="start"))
    return path


def test_fine_tuning_inherits_the_starting_models_settings(tmp_path):
    start = _start_model(tmp_path, normalisation="percentile", percentiles=(2.0, 98.0), mode="tile",
                         input_size=32, tile_size=64, threshold=0.4, min_size=5, instances=True, invert=True)
    cfg = TrainConfig(epochs=1, batch_size=4, loss=LossConfig(srp=False), device="cpu", init=str(start))
    assert cfg.mode is None and cfg.normalisation is None and cfg.patch_size is None
    _, result = _run(_discs(4), None, cfg)
    got = result.model.inference
    assert (got.normalisation, got.percentiles, got.mode, got.input_size, got.tile_size, got.threshold,
            got.min_size, got.instances, got.invert) == ("percentile", (2.0, 98.0), "tile", 32, 64, 0.4, 5, True, True)
    assert result.config.mode == "tile" and result.config.patch_size == 32 and result.config.model == SMALL
    # what the caller sets wins over the starting model
    _, result = _run(_discs(4), None, dataclasses.replace(cfg, threshold=0.6, normalisation="minmax"))
    assert result.model.inference.threshold == 0.6 and result.model.inference.normalisation == "minmax"
    assert result.model.inference.mode == "tile"


def test_from_scratch_uses_the_inference_defaults():
    from napari_litenext.config import InferenceConfig

    cfg = TrainConfig(epochs=1, batch_size=4, loss=LossConfig(srp=False), device="cpu", model=SMALL)
    assert cfg.inference_config() == InferenceConfig()
    assert cfg.inference_config(InferenceConfig(mode="tile")).mode == "tile"


def test_resume_keeps_the_runs_settings(tmp_path):
    _run(_discs(4), None, _cfg(tmp_path, epochs=1, normalisation="minmax", threshold=0.3))
    cfg = TrainConfig(epochs=2, batch_size=4, loss=LossConfig(srp=False), device="cpu", resume=True,
                      output_dir=str(tmp_path))
    _, result = _run(_discs(4), None, cfg)
    inference = load_checkpoint(tmp_path / "last.pt").inference
    assert (inference.normalisation, inference.threshold, inference.mode, inference.input_size) == \
        ("minmax", 0.3, "tile", 32)
    assert result.history[-1]["epoch"] == 2


def test_a_changed_loss_weight_reaches_the_loss_and_the_records(tmp_path, monkeypatch):
    import napari_litenext.training.losses as losses

    seen = []
    original = losses.margin_weight_map

    def spy(mask, kernel_size, w_b, w_o, w_m):
        seen.append((kernel_size, w_b, w_o, w_m))
        return original(mask, kernel_size, w_b, w_o, w_m)

    monkeypatch.setattr(losses, "margin_weight_map", spy)
    loss = LossConfig(preset="authors-code", w_m=4.5, kernel_size=5, srp=False)
    _run(_discs(4), None, _cfg(tmp_path, epochs=1, loss=loss))
    assert seen and set(seen) == {(5, 5.0, 3.0, 4.5)}
    ckpt = load_checkpoint(tmp_path / "best.pt")
    recorded = ckpt.extra["train_config"]["loss"]
    assert (recorded["w_b"], recorded["w_o"], recorded["w_m"], recorded["kernel_size"]) == (5.0, 3.0, 4.5, 5)
    assert "w_m 4.5" in ckpt.card.recipe and "changed w_m, kernel_size" in ckpt.card.recipe


def test_validation_dice_is_what_predict_and_the_metrics_give():
    from napari_litenext.inference.evaluate import evaluate_arrays
    from napari_litenext.inference.predict import predict

    val = _discs(3, seed=4)
    _, result = _run(_discs(4), val, _cfg(None, epochs=1))
    labels = [predict(s.image, result.model, instances=False).labels for s in val]
    dice = evaluate_arrays(labels, [s.mask for s in val]).means["dice"]
    assert result.history[0]["val_dice"] == pytest.approx(dice, abs=1e-12)


def test_tile_training_records_the_object_size_it_learned(tmp_path):
    yy, xx = np.mgrid[:48, :48]
    images, masks = [], []
    for k in range(4):  # two 10 px and one 16 px disc per image: most foreground is in 16 px objects
        mask = np.zeros((48, 48), bool)
        for cy, cx, d in ((12, 12, 10), (12, 36, 10), (36, 24, 16)):
            mask |= (yy - cy + 0.5) ** 2 + (xx - cx + 0.5) ** 2 <= (d / 2) ** 2
        images.append((mask * 200 + k).astype(np.uint8))
        masks.append(mask)
    _, result = _run(samples_from_arrays(images, masks), None, _cfg(tmp_path, epochs=1))
    assert result.load_model().inference.trained_object_size == pytest.approx(16, abs=1)
    _, resized = _run(samples_from_arrays(images, masks), None, _cfg(None, epochs=1, mode="resize"))
    assert resized.model.inference.trained_object_size == 0.0  # rescaling is for native-resolution models
