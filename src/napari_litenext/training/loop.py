"""The training loop: a generator of progress events behind the CLI, the widget and scripts.

    for event in train(train_samples, val_samples, TrainConfig(epochs=50, output_dir="run")):
        print(event.kind, event.epoch, event.loss, event.val_dice)

``train`` yields a ``TrainEvent`` at start, after every optimiser step, after every epoch's
validation and at the end, and returns a ``TrainResult``. It stops between steps when
``should_stop()`` returns True (the widget's Stop button). Settings the trained model carries are
resolved here, once, for every caller: fine-tuning (``init``) and ``resume`` inherit the starting
model's normalisation, mode, input size and the rest unless the config sets them. The run's files
(best.pt whenever validation Dice improves, last.pt to resume, history.csv) are ``run_folder``'s job.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np
import torch

from ..config import InferenceConfig
from ..errors import DataError, TrainingError
from ..network.checkpoint import load_checkpoint
from ..network.model import LiteNeXt
from .augment import augment_batch
from .config import TrainConfig
from .data import BatchSampler, Sample, Share, prepare
from .distributed import Distributed
from .losses import build_loss
from .run_folder import HISTORY_FIELDS, RunFolder, RunState
from .srp import SRP
from .validation import validation_images

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "TrainingError", "train", "HISTORY_FIELDS"]


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
    elapsed_s: float = 0.0
    val_dice: float | None = None
    best_val_dice: float | None = None
    device: str = ""
    lr: float | None = None
    eta_s: float | None = None
    message: str = ""
    checkpoint: str | None = None


@dataclass
class TrainResult:
    """What a finished or stopped run produced.

    Attributes:
        checkpoint: best.pt (None without an output folder, or if validation never ran).
        best_val_dice: validation Dice of the best model.
        best_epoch: epoch it was reached at.
        history: one dict per epoch with ``HISTORY_FIELDS``.
        stopped: True when ``should_stop`` ended the run early.
        device: where it ran.
        model: the best network (the last one if validation never ran), in eval mode, carrying
            ``inference``.
        config: the run's settings with every inherited value filled in (as recorded in checkpoints).
    """

    checkpoint: Path | None
    best_val_dice: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]
    stopped: bool
    device: str
    model: LiteNeXt
    config: TrainConfig

    @property
    def inference(self) -> InferenceConfig:
        """The settings the trained model carries."""
        return self.model.inference

    def load_model(self) -> LiteNeXt:
        """The best model from best.pt, ready for ``predict``."""
        if self.checkpoint is None:
            raise DataError("no checkpoint was written (no output folder, or the run stopped before its first "
                            "validation); use result.model")
        return load_checkpoint(self.checkpoint).build_model()


def _starting_model(cfg: TrainConfig, folder: RunFolder) -> LiteNeXt:
    """The network to train: resumed (last.pt, else best.pt), the ``init`` model, or new; settings resolved."""
    if cfg.resume:
        start: LiteNeXt | None = folder.resume_checkpoint().build_model()
    elif cfg.init is not None:
        from ..network.registry import load_model

        start = load_model(cfg.init, device="cpu")
    else:
        start = None
    if start is not None and cfg.model is not None and start.config != cfg.model:
        what = "the run to resume" if cfg.resume else f"the starting model {cfg.init!r}"
        raise DataError(f"{what} has a different network shape than asked for; drop the custom model "
                        "settings to continue from it")
    model = start if start is not None else LiteNeXt(cfg.model)
    model.inference = cfg.inference_config(start.inference if start is not None else None)
    return model


def _typical_object_size(samples: list[Sample]) -> float:
    """Median over images of each mask's object diameter (px, ``estimate_object_size``): the scale
    the network learns, which ``object_size`` at inference rescales images to (0.0 when no mask
    has an object)."""
    from ..inference.object_size import estimate_object_size

    sizes = [size for size in (estimate_object_size(s.mask) for s in samples) if size]
    return round(float(np.median(sizes)), 2) if sizes else 0.0


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

    Under torchrun the processes train together (``distributed``): ``batch_size`` is shared between
    them and only rank 0 writes the output folder.

    Raises:
        DataError: unusable data (empty masks everywhere, patches larger than images, ...) or an
            output folder that already holds a model.
        CheckpointError: ``init`` or ``resume`` names an unusable checkpoint.
        SettingsError: an inherited setting combined with this config's is out of range.
        TrainingError: out of memory on the device (with advice on the batch size), or the loss
            diverged.
    """
    cfg = config or TrainConfig()
    if not train_samples:
        raise DataError("no training pairs given")
    folder = RunFolder(cfg.output_dir, cfg.resume, cfg.overwrite)
    ddp = Distributed.start(cfg.device)
    device = ddp.device
    torch.manual_seed(cfg.seed)  # before the new network's weights are drawn
    model = _starting_model(cfg, folder)
    if cfg.mode == "tile":
        model.inference = dataclasses.replace(model.inference, trained_object_size=_typical_object_size(train_samples))
    inference = model.inference
    cfg = cfg.resolved(inference, model.config)
    val_samples = list(val_samples or [])

    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mix = cfg.resize_mix if cfg.mode == "tile" else 0.0
    train_set = prepare(train_samples, inference, cfg.mode, cfg.patch_size, cfg.max_patches_per_image,
                        with_resized=mix > 0)
    val_set = validation_images(val_samples or train_samples, cfg.mode, cfg.patch_size)
    sampler = BatchSampler(train_set, cfg.mode, cfg.patch_size, cfg.batch_size, rng, resize_mix=mix,
                           rank=ddp.rank, world=ddp.world)

    model = model.to(device)
    srp = SRP(model, tau=cfg.loss.srp_tau).to(device) if cfg.loss.srp else None
    loss_fn = build_loss(cfg.loss).to(device)
    params = list(model.parameters()) + (list(srp.student_parameters()) if srp else [])
    optimiser = torch.optim.NAdam(params, lr=cfg.lr)
    net = ddp.wrap(model, srp)
    amp = cfg.amp and device.type == "cuda"

    # cfg lets restore rebuild a missing best.pt: a write, so rank 0's alone.
    state = (folder.restore(model, srp, optimiser, rng, gen, inference, cfg if ddp.is_main else None)
             if cfg.resume else RunState())
    best_state = None
    start_epoch = state.epoch
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    t0 = time.perf_counter()
    done_steps = 0
    note = "" if val_samples else " (no validation pairs: validating on the training pairs)"
    note += "".join(f"; {text}" for text in folder.notes)
    yield TrainEvent("start", start_epoch, cfg.epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                     device=str(device), global_step=start_epoch * steps_per_epoch, best_val_dice=state.best,
                     message=f"training on {device} ({len(train_set)} training, "
                             f"{len(val_samples)} validation images){note}")
    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        lr = _lr_at(cfg, epoch)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        sums = np.zeros(3)
        n_steps = 0
        epoch_start = time.perf_counter()
        for step, (images, masks, share) in enumerate(sampler.shares()):
            try:
                losses = _step(model, net, srp, loss_fn, optimiser, images, masks, share, ddp.loss_scale(share),
                               cfg, device, gen, amp)
            except torch.OutOfMemoryError:
                raise TrainingError(f"out of memory on {device} at batch size {cfg.batch_size} and patch "
                                    f"{cfg.patch_size}: halve the batch size (or the patch size), or train "
                                    "on the CPU") from None
            losses = ddp.batch_mean(losses, share)
            sums += losses
            n_steps += 1
            done_steps += 1
            elapsed = time.perf_counter() - t0
            remaining = total_steps - (epoch * steps_per_epoch + step + 1)
            yield TrainEvent("step", epoch + 1, cfg.epochs, step + 1, steps_per_epoch,
                             epoch * steps_per_epoch + step + 1, total_steps, loss=float(losses[0]),
                             loss_seg=float(losses[1]), loss_rep=float(losses[2]) if srp else None, lr=lr,
                             eta_s=elapsed / done_steps * remaining, elapsed_s=elapsed, device=str(device),
                             best_val_dice=state.best)
            if ddp.any(should_stop is not None and should_stop()):
                stopped = True
                break
        if n_steps == 0:
            break
        means = sums / n_steps
        last_epoch = stopped or epoch + 1 == cfg.epochs
        val = ddp.validate(model, val_set) if (epoch + 1) % cfg.val_every == 0 or last_epoch else None
        # Plain floats: numpy scalars would not pass the safe (weights_only) loader of last.pt.
        state.history.append({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": float(lr),
                              "loss": float(means[0]), "loss_seg": float(means[1]),
                              "loss_rep": float(means[2]) if srp else None, "val_dice": val,
                              "seconds": time.perf_counter() - epoch_start})
        state.epoch = epoch + 1
        improved = val is not None and (state.best is None or val > state.best)
        if improved:
            state.best, state.best_epoch = val, epoch + 1
            if folder.path is None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ddp.is_main:
            folder.record(state, improved, model, srp, optimiser, inference, cfg, rng, gen)
        elapsed = time.perf_counter() - t0
        yield TrainEvent("epoch", epoch + 1, cfg.epochs, steps_per_epoch, steps_per_epoch,
                         (epoch + 1) * steps_per_epoch, total_steps, loss=float(means[0]),
                         loss_seg=float(means[1]), loss_rep=float(means[2]) if srp else None, val_dice=val,
                         best_val_dice=state.best, lr=lr, elapsed_s=elapsed, device=str(device),
                         eta_s=elapsed / max(1, done_steps) * (total_steps - (epoch + 1) * steps_per_epoch))
        if improved and folder.path is not None:
            yield TrainEvent("best", epoch + 1, cfg.epochs, val_dice=val, best_val_dice=state.best,
                             checkpoint=str(folder.best_path), device=str(device), elapsed_s=elapsed)
        if stopped:
            break
    ddp.finish()
    ckpt = folder.best_checkpoint()
    kind = "stopped" if stopped else "done"
    best = state.best
    yield TrainEvent(kind, state.history[-1]["epoch"] if state.history else start_epoch, cfg.epochs,
                     best_val_dice=best, checkpoint=str(ckpt) if ckpt else None, device=str(device),
                     elapsed_s=time.perf_counter() - t0,
                     message=f"{'stopped' if stopped else 'finished'}; best validation Dice "
                             f"{best:.4f} at epoch {state.best_epoch}" if best is not None else kind)
    if best_state is not None:
        # Without an output folder the best weights stay reachable in memory (scripts, tests).
        model.load_state_dict(best_state)
    return TrainResult(ckpt, best, state.best_epoch, state.history, stopped, str(device), model.eval(), cfg)


def _step(model: LiteNeXt, net: torch.nn.Module, srp: SRP | None, loss_fn, optimiser, images: np.ndarray,
          masks: np.ndarray, share: Share, scale: float, cfg: TrainConfig, device: torch.device,
          gen: torch.Generator, amp: bool) -> np.ndarray:
    x = torch.from_numpy(images).to(device, non_blocking=True)
    y = torch.from_numpy(masks).to(device, non_blocking=True)
    rows = (share.start, share.total)
    if srp is not None:
        # Two independently augmented views of every patch, stacked [views a; views b].
        xa, ya = augment_batch(x, y, cfg.augment, gen, rows)
        xb, yb = augment_batch(x, y, cfg.augment, gen, rows)
        x, y = torch.cat([xa, xb]), torch.cat([ya, yb])
    else:
        x, y = augment_batch(x, y, cfg.augment, gen, rows)
    x = x.contiguous(memory_format=torch.channels_last)
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits, rep = net(x)
        seg = loss_fn(logits.float(), y)
        total = seg + cfg.loss.srp_lambda * rep
    if not torch.isfinite(total):
        raise TrainingError("the loss became NaN or infinite; lower the learning rate or check the images "
                            "for extreme values")
    (total * scale).backward()
    optimiser.step()
    if srp is not None:
        srp.update_teacher(model)
    return np.array([total.item(), seg.item(), rep.item()])
