"""The training loop: a generator of progress events behind the CLI, the widget and scripts.

    for event in train(train_samples, val_samples, TrainConfig(epochs=50, output_dir="run")):
        print(event.kind, event.epoch, event.loss, event.val_dice)

``train`` yields a ``TrainEvent`` at start, after every optimiser step, after every epoch's
validation and at the end, and returns a ``TrainResult``. It stops between steps when
``should_stop()`` returns True (the widget's Stop button). The best checkpoint (by validation Dice,
never by test data) is written whenever it improves, so stopping or a crash keeps it; ``last.pt``
holds the optimiser state for ``resume``. Writes are atomic.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable

import numpy as np
import torch

from ..errors import TrainingError
from .. import __version__
from .augment import AugmentConfig, augment_batch
from ..network.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..io.files import atomic_write
from ..config import InferenceConfig, ModelCard, ModelConfig
from .data import BatchSampler, DataError, PreparedSet, Sample, prepare
from ..network.device import resolve_device
from ..network.model import LiteNeXt
from .srp import SRP

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "TrainingError", "train", "validate", "HISTORY_FIELDS"]

# Validation images up to this many pixels go through the network whole.
_WHOLE_IMAGE_PIXELS = 2048 * 2048

HISTORY_FIELDS = ("epoch", "step", "lr", "loss", "loss_seg", "loss_rep", "val_dice", "seconds")




@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; defaults are the specification's recipe.

    Attributes:
        epochs: passes over the training set.
        lr: NAdam learning rate.
        lr_step: epochs between learning-rate decays (0 = constant).
        lr_gamma: factor applied at each decay.
        batch_size: image pairs per step (each pair gives two views when SRP is on).
        patch_size: network input edge in pixels (multiple of 16).
        mode: "tile" (random native-resolution patches) or "resize" (whole image resized).
        loss: "mwl" (Marginal Weight Loss) or "dice_bce".
        mwl_preset: "boundary" or "authors-code".
        mwl_w_b, mwl_w_o, mwl_w_m, mwl_kernel: override the preset's background, object, margin
            weights and kernel size.
        srp: train with Self-embedding Representation Parallel.
        srp_lambda: weight of the representation loss.
        srp_tau: EMA decay of the SRP teacher.
        normalisation, percentiles, invert: input normalisation, stored in the model for inference.
        tile_size, tile_overlap, threshold: inference settings stored in the model.
        augment: augmentation settings.
        val_every: validate every this many epochs (and at the last).
        seed: seeds numpy and torch for repeatable runs.
        device: "auto", "cpu", "cuda", "mps".
        amp: bfloat16 autocast on CUDA (ignored elsewhere).
        init: start from this bundled model name or checkpoint path (fine-tuning); None = scratch.
        resume: continue the run in ``output_dir`` from its last.pt.
        output_dir: folder for best.pt, last.pt, history.csv.
        overwrite: allow writing into an output_dir that already holds a model.
        name: model name recorded in the model card.
        model: network shape (default: the paper's).
        max_patches_per_image: cap on patches an image contributes per epoch in tile mode.
        resize_mix: in tile mode, share of patches that are whole images resized to the patch
            size instead of native-resolution crops (scale augmentation; 0 = off).
    """

    epochs: int = 300
    lr: float = 1e-4
    lr_step: int = 100
    lr_gamma: float = 0.25
    batch_size: int = 32
    patch_size: int = 256
    mode: str = "resize"
    loss: str = "mwl"
    mwl_preset: str = "boundary"
    mwl_w_b: float | None = None
    mwl_w_o: float | None = None
    mwl_w_m: float | None = None
    mwl_kernel: int | None = None
    srp: bool = True
    srp_lambda: float = 0.1
    srp_tau: float = 0.99
    normalisation: str = "dtype"
    percentiles: tuple[float, float] = (1.0, 99.8)
    invert: bool = False
    tile_size: int = 512
    tile_overlap: float = 0.125
    threshold: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    init: str | None = None
    resume: bool = False
    output_dir: str | None = None
    overwrite: bool = False
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    max_patches_per_image: int = 16
    resize_mix: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.patch_size >= 16 and self.patch_size % 16 == 0,
             f"patch size must be a multiple of 16 and >= 16, got {self.patch_size}"),
            (self.mode in ("tile", "resize"), f"mode must be 'tile' or 'resize', got {self.mode!r}"),
            (self.loss in ("mwl", "dice_bce"), f"loss must be 'mwl' or 'dice_bce', got {self.loss!r}"),
            (self.srp_lambda >= 0, f"SRP lambda must be >= 0, got {self.srp_lambda}"),
            (0 <= self.srp_tau < 1, f"SRP tau must be in [0, 1), got {self.srp_tau}"),
            (self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}"),
            (self.lr_step >= 0 and 0 < self.lr_gamma <= 1, "lr_step must be >= 0 and lr_gamma in (0, 1]"),
            (0 <= self.resize_mix <= 1, f"resize_mix must be in [0, 1], got {self.resize_mix}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def inference_config(self) -> InferenceConfig:
        """The inference settings the trained model will carry."""
        return InferenceConfig(normalisation=self.normalisation, percentiles=tuple(self.percentiles),
                               mode=self.mode, input_size=self.patch_size, tile_size=self.tile_size,
                               tile_overlap=self.tile_overlap, threshold=self.threshold, invert=self.invert)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible settings, for checkpoints and reports."""
        out = dataclasses.asdict(self)
        out["percentiles"] = list(self.percentiles)
        out["augment"]["blur_kernels"] = list(self.augment.blur_kernels)
        out["model"] = self.model.to_dict()
        return out


@dataclass
class TrainEvent:
    """One progress report from ``train``.

    ``kind`` is "start", "step", "epoch" (after validation), "best" (new best checkpoint written),
    "done" or "stopped". Fields not relevant to a kind are None.
    """

    kind: str
    epoch: int
    epochs: int
    step: int = 0
    steps_per_epoch: int = 0
    global_step: int = 0
    total_steps: int = 0
    loss: float | None = None
    loss_seg: float | None = None
    loss_rep: float | None = None
    val_dice: float | None = None
    best_val_dice: float | None = None
    lr: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    device: str = ""
    message: str = ""
    checkpoint: str | None = None


@dataclass
class TrainResult:
    """What a finished or stopped run produced.

    Attributes:
        checkpoint: best.pt (None if validation never ran, e.g. stopped before the first epoch ended).
        best_val_dice: validation Dice of that checkpoint.
        best_epoch: epoch it was reached at.
        history: one dict per epoch with HISTORY_FIELDS.
        stopped: True when ``should_stop`` ended the run early.
        device: where it ran.
    """

    checkpoint: Path | None
    best_val_dice: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]
    stopped: bool
    device: str

    def load_model(self) -> LiteNeXt:
        """The best model, ready for ``predict``."""
        if self.checkpoint is None:
            raise RuntimeError("no checkpoint was written: the run stopped before its first validation")
        return load_checkpoint(self.checkpoint).build_model()


def _check_output(cfg: TrainConfig) -> Path | None:
    if cfg.output_dir is None:
        return None
    out = Path(cfg.output_dir)
    existing = [p.name for p in (out / "best.pt", out / "last.pt") if p.exists()]
    if existing and not (cfg.resume or cfg.overwrite):
        raise DataError(f"{out} already holds {', '.join(existing)}; choose another output folder, "
                        "resume that run, or allow overwriting")
    if cfg.resume and not (out / "last.pt").exists():
        raise DataError(f"cannot resume: {out / 'last.pt'} does not exist")
    return out


def _initial_model(cfg: TrainConfig) -> LiteNeXt:
    if cfg.init is None:
        return LiteNeXt(cfg.model)
    from ..network.registry import load_model

    model = load_model(cfg.init, device="cpu")
    if model.config != cfg.model:
        raise DataError(f"the starting model {cfg.init!r} has a different network shape than asked for; "
                        "drop the custom model settings to fine-tune it")
    return model


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    return cfg.lr * (cfg.lr_gamma ** (epoch // cfg.lr_step) if cfg.lr_step else 1.0)


def train(train_samples: list[Sample], val_samples: list[Sample] | None = None, config: TrainConfig | None = None,
          should_stop: Callable[[], bool] | None = None) -> Generator[TrainEvent, None, TrainResult]:
    """Train LiteNeXt; a generator of ``TrainEvent`` returning a ``TrainResult``.

    Args:
        train_samples: training pairs (``data.samples_from_folders`` / ``samples_from_arrays``).
        val_samples: validation pairs; None or empty validates on the training pairs (say so to the
            user: model selection is then not independent).
        config: settings; ``TrainConfig()`` is the paper's recipe.
        should_stop: polled between steps; True ends the run after the current step.

    Raises:
        DataError: unusable data (empty masks everywhere, patches larger than images, ...) or an
            output folder that already holds a model.
        CheckpointError: ``init`` or ``resume`` names an unusable checkpoint.
        TrainingError: out of memory on the device (with advice on the batch size), or the loss
            diverged.
    """
    cfg = config or TrainConfig()
    out = _check_output(cfg)
    device = resolve_device(cfg.device)
    inference = cfg.inference_config()
    val_samples = list(val_samples or [])
    if not train_samples:
        raise DataError("no training pairs given")

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mix = cfg.resize_mix if cfg.mode == "tile" else 0.0
    train_set = prepare(train_samples, inference, cfg.mode, cfg.patch_size, cfg.max_patches_per_image,
                        with_resized=mix > 0)
    val_set = prepare(val_samples, inference, "resize" if cfg.mode == "resize" else "native", cfg.patch_size,
                      check_masks=False) if val_samples else None
    sampler = BatchSampler(train_set, cfg.mode, cfg.patch_size, cfg.batch_size, rng, resize_mix=mix)

    model = _initial_model(cfg).to(device)
    srp = SRP(model, tau=cfg.srp_tau).to(device) if cfg.srp else None
    from .losses import build_loss

    mwl = dict(preset=cfg.mwl_preset, w_b=cfg.mwl_w_b, w_o=cfg.mwl_w_o, w_m=cfg.mwl_w_m,
               kernel_size=cfg.mwl_kernel) if cfg.loss == "mwl" else {}
    loss_fn = build_loss(cfg.loss, **mwl).to(device)
    params = list(model.parameters()) + (list(srp.student_parameters()) if srp else [])
    optimiser = torch.optim.NAdam(params, lr=cfg.lr)
    amp = cfg.amp and device.type == "cuda"

    start_epoch, history, best, best_epoch = 0, [], None, None
    best_state = None
    if cfg.resume:
        start_epoch, history, best, best_epoch = _restore(out / "last.pt", model, srp, optimiser, rng, gen)

    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    t0 = time.perf_counter()
    done_steps = 0
    note = "" if val_set else " (no validation pairs: validating on the training pairs)"
    yield TrainEvent("start", start_epoch, cfg.epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                     device=str(device), global_step=start_epoch * steps_per_epoch, best_val_dice=best,
                     message=f"training on {device} ({len(train_set)} training, "
                             f"{len(val_set) if val_set else 0} validation images){note}")
    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        lr = _lr_at(cfg, epoch)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        sums = np.zeros(3)
        n_steps = 0
        epoch_start = time.perf_counter()
        for step, (images, masks) in enumerate(sampler.epoch()):
            try:
                losses = _step(model, srp, loss_fn, optimiser, images, masks, cfg, device, gen, amp)
            except torch.OutOfMemoryError:
                raise TrainingError(f"out of memory on {device} at batch size {cfg.batch_size} and patch "
                                    f"{cfg.patch_size}: halve the batch size (or the patch size), or train "
                                    "on the CPU") from None
            sums += losses
            n_steps += 1
            done_steps += 1
            elapsed = time.perf_counter() - t0
            remaining = total_steps - (epoch * steps_per_epoch + step + 1)
            yield TrainEvent("step", epoch + 1, cfg.epochs, step + 1, steps_per_epoch,
                             epoch * steps_per_epoch + step + 1, total_steps, loss=float(losses[0]),
                             loss_seg=float(losses[1]), loss_rep=float(losses[2]) if srp else None, lr=lr,
                             eta_s=elapsed / done_steps * remaining, elapsed_s=elapsed, device=str(device),
                             best_val_dice=best)
            if should_stop is not None and should_stop():
                stopped = True
                break
        if n_steps == 0:
            break
        means = sums / n_steps
        last_epoch = stopped or epoch + 1 == cfg.epochs
        val = None
        if (epoch + 1) % cfg.val_every == 0 or last_epoch:
            val = validate(model, val_set or train_set, cfg, device)
        # Plain floats: numpy scalars would not pass the safe (weights_only) loader of last.pt.
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": float(lr),
               "loss": float(means[0]), "loss_seg": float(means[1]),
               "loss_rep": float(means[2]) if srp else None, "val_dice": val,
               "seconds": time.perf_counter() - epoch_start}
        history.append(row)
        improved = val is not None and (best is None or val > best)
        if improved:
            best, best_epoch = val, epoch + 1
            if out is None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if out is not None:
            _write_history(out / "history.csv", history)
            if improved:
                card = _card(cfg, best, best_epoch)
                save_checkpoint(out / "best.pt", model, inference, card,
                                extra={"train_config": cfg.to_dict(), "epoch": epoch + 1})
            _save_last(out / "last.pt", model, srp, optimiser, inference, cfg, epoch + 1, history, best,
                       best_epoch, rng, gen)
        elapsed = time.perf_counter() - t0
        yield TrainEvent("epoch", epoch + 1, cfg.epochs, steps_per_epoch, steps_per_epoch,
                         (epoch + 1) * steps_per_epoch, total_steps, loss=float(means[0]),
                         loss_seg=float(means[1]), loss_rep=float(means[2]) if srp else None, val_dice=val,
                         best_val_dice=best, lr=lr, elapsed_s=elapsed, device=str(device),
                         eta_s=elapsed / max(1, done_steps) * (total_steps - (epoch + 1) * steps_per_epoch))
        if improved and out is not None:
            yield TrainEvent("best", epoch + 1, cfg.epochs, val_dice=val, best_val_dice=best,
                             checkpoint=str(out / "best.pt"), device=str(device), elapsed_s=elapsed)
        if stopped:
            break
    ckpt = out / "best.pt" if out is not None and (out / "best.pt").exists() else None
    kind = "stopped" if stopped else "done"
    yield TrainEvent(kind, history[-1]["epoch"] if history else start_epoch, cfg.epochs, best_val_dice=best,
                     checkpoint=str(ckpt) if ckpt else None, device=str(device),
                     elapsed_s=time.perf_counter() - t0,
                     message=f"{'stopped' if stopped else 'finished'}; best validation Dice "
                             f"{best:.4f} at epoch {best_epoch}" if best is not None else kind)
    result = TrainResult(ckpt, best, best_epoch, history, stopped, str(device))
    if out is None and best_state is not None:
        # Without an output folder the best weights stay reachable in memory (scripts, tests).
        model.load_state_dict(best_state)
    result.model = model.eval()
    result.inference = inference
    return result


def _step(model: LiteNeXt, srp: SRP | None, loss_fn, optimiser, images: np.ndarray, masks: np.ndarray,
          cfg: TrainConfig, device: torch.device, gen: torch.Generator, amp: bool) -> np.ndarray:
    x = torch.from_numpy(images).to(device, non_blocking=True)
    y = torch.from_numpy(masks).to(device, non_blocking=True)
    if srp is not None:
        # Two independently augmented views of every patch, stacked [views a; views b].
        xa, ya = augment_batch(x, y, cfg.augment, gen)
        xb, yb = augment_batch(x, y, cfg.augment, gen)
        x, y = torch.cat([xa, xb]), torch.cat([ya, yb])
    else:
        x, y = augment_batch(x, y, cfg.augment, gen)
    x = x.contiguous(memory_format=torch.channels_last)
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        feats = model.encode(x)
        logits = model.decode(feats)
        seg = loss_fn(logits.float(), y)
        rep = srp.loss(feats[-1], x) if srp is not None else torch.zeros((), device=device)
        total = seg + cfg.srp_lambda * rep
    if not torch.isfinite(total):
        raise TrainingError("the loss became NaN or infinite; lower the learning rate or check the images "
                            "for extreme values")
    total.backward()
    optimiser.step()
    if srp is not None:
        srp.update_teacher(model)
    return np.array([total.item(), seg.item(), rep.item()])


@torch.inference_mode()
def validate(model: LiteNeXt, data: PreparedSet, cfg: TrainConfig, device: torch.device) -> float | None:
    """Mean per-image Dice at the configured threshold, skipping images with empty ground truth.

    In "resize" mode the images are already at the patch size (the paper's protocol); in "tile"
    mode whole images are segmented at native resolution, as ``predict`` would.
    """
    model.eval()
    scores = []
    for image, mask in zip(data.images, data.masks):
        if not mask.any():
            continue
        x = torch.from_numpy(image.astype(np.float32))[None].to(device)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        prob = _probabilities(model, x, cfg)
        pred = prob[0, 0].cpu().numpy() > cfg.threshold
        inter = np.logical_and(pred, mask).sum()
        scores.append(2.0 * inter / (pred.sum() + mask.sum()))
    model.train()
    return float(np.mean(scores)) if scores else None


def _probabilities(model: LiteNeXt, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h * w <= _WHOLE_IMAGE_PIXELS:
        return torch.sigmoid(model(x))
    # Large validation images: non-overlapping crops keep activation memory bounded; validation
    # only ranks checkpoints, so the seams' small effect on Dice is acceptable here.
    out = torch.empty((1, 1, h, w), device=x.device)
    step = 1024
    for y0 in range(0, h, step):
        for x0 in range(0, w, step):
            crop = x[..., y0:y0 + step, x0:x0 + step]
            ch, cw = crop.shape[-2:]
            if min(ch, cw) < 16:
                crop = x[..., max(0, y0 + ch - 16):y0 + ch, max(0, x0 + cw - 16):x0 + cw]
                out[..., max(0, y0 + ch - 16):y0 + ch, max(0, x0 + cw - 16):x0 + cw] = torch.sigmoid(model(crop))
                continue
            out[..., y0:y0 + ch, x0:x0 + cw] = torch.sigmoid(model(crop))
    return out


def _card(cfg: TrainConfig, best: float | None, best_epoch: int | None) -> ModelCard:
    loss = "Marginal Weight Loss (" + cfg.mwl_preset + ")" if cfg.loss == "mwl" else "soft Dice + BCE"
    recipe = (f"{loss}{' + SRP (lambda ' + str(cfg.srp_lambda) + ')' if cfg.srp else ''}; NAdam lr {cfg.lr}, "
              f"x{cfg.lr_gamma} every {cfg.lr_step} epochs; batch {cfg.batch_size}; {cfg.mode} mode, "
              f"{cfg.patch_size} px; best of {cfg.epochs} epochs at epoch {best_epoch}; seed {cfg.seed}")
    metrics = {"val_dice": round(best, 4)} if best is not None else {}
    return ModelCard(name=cfg.name, recipe=recipe, metrics=metrics, trained_by=f"napari-litenext {__version__}")


def _write_history(path: Path, history: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _save_last(path: Path, model, srp, optimiser, inference, cfg, epoch, history, best, best_epoch, rng, gen):
    extra = {
        "train_config": cfg.to_dict(),
        "epoch": epoch,
        "history": [{k: v for k, v in row.items()} for row in history],
        "best_val_dice": best,
        "best_epoch": best_epoch,
        "optimiser": optimiser.state_dict(),
        "srp": srp.state_dict() if srp is not None else None,
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": gen.get_state(),
    }
    save_checkpoint(path, model, inference, _card(cfg, best, best_epoch), extra=extra)


def _restore(path: Path, model, srp, optimiser, rng, gen):
    ckpt = load_checkpoint(path)
    extra = ckpt.extra
    try:
        model.load_state_dict(ckpt.state_dict)
        optimiser.load_state_dict(extra["optimiser"])
        if srp is not None:
            if extra.get("srp") is None:
                raise CheckpointError(f"{path} was trained without SRP; resume with SRP off")
            srp.load_state_dict(extra["srp"])
        rng.bit_generator.state = extra["numpy_rng"]
        gen.set_state(extra["torch_rng"])
        return int(extra["epoch"]), list(extra["history"]), extra["best_val_dice"], extra["best_epoch"]
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} cannot be resumed with these settings ({exc})") from None
