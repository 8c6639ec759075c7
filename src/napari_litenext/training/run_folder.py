"""The folder of one training run: best.pt, last.pt and history.csv, written as epochs end.

``best.pt`` is the model to use (the best validation Dice so far, never chosen on test data);
``last.pt`` adds what ``resume`` needs (optimiser, SRP and random-generator states, history).
Every write is atomic, so a stop, a crash or a kill keeps the previous files whole. The model card
the checkpoints carry is made here, from the resolved settings.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .. import __version__
from ..config import InferenceConfig, ModelCard
from ..errors import CheckpointError, DataError
from ..io.files import atomic_write
from ..network.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..network.model import LiteNeXt
from .config import TrainConfig

__all__ = ["RunFolder", "RunState", "HISTORY_FIELDS", "model_card"]

HISTORY_FIELDS = ("epoch", "step", "lr", "loss", "loss_seg", "loss_rep", "val_dice", "seconds")


@dataclass
class RunState:
    """Where a run stands after an epoch: what ``resume`` restores.

    Attributes:
        epoch: epochs completed.
        history: one row per epoch with ``HISTORY_FIELDS``.
        best: best validation Dice so far (None before the first validation).
        best_epoch: the epoch it was reached at.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None


def model_card(cfg: TrainConfig, best: float | None, best_epoch: int | None) -> ModelCard:
    """The card a run's checkpoints carry: name, the recipe actually used, validation Dice."""
    recipe = (f"{cfg.loss.describe()}; NAdam lr {cfg.lr:g}, x{cfg.lr_gamma:g} every {cfg.lr_step} epochs; "
              f"batch {cfg.batch_size}; {cfg.mode} mode, {cfg.patch_size} px; best of {cfg.epochs} epochs at "
              f"epoch {best_epoch}; seed {cfg.seed}")
    metrics = {"val_dice": round(best, 4)} if best is not None else {}
    return ModelCard(name=cfg.name, recipe=recipe, metrics=metrics, trained_by=f"napari-litenext {__version__}")


class RunFolder:
    """The output folder of one run, or none (``path`` None: nothing is written).

    Args:
        path: the folder (created when the first epoch ends).
        resume: continue the run whose last.pt is there.
        overwrite: allow replacing a run's files.

    Raises:
        DataError: the folder already holds a run and neither ``resume`` nor ``overwrite`` is set,
            or ``resume`` is set and there is no last.pt.
    """

    def __init__(self, path: str | Path | None, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is None:
            if resume:
                raise DataError("cannot resume without an output folder; give the folder of the run to resume")
            return
        existing = [p.name for p in (self.best_path, self.last_path) if p.exists()]
        if existing and not (resume or overwrite):
            raise DataError(f"{self.path} already holds {', '.join(existing)}; choose another output folder, "
                            "resume that run, or allow overwriting")
        if resume and not self.last_path.exists():
            raise DataError(f"cannot resume: {self.last_path} does not exist")

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.path / "last.pt"

    def last_checkpoint(self) -> Checkpoint:
        """last.pt of the run being resumed (its model and settings are the starting point)."""
        return load_checkpoint(self.last_path)

    def restore(self, model: LiteNeXt, srp: Any, optimiser: torch.optim.Optimizer, rng: np.random.Generator,
                gen: torch.Generator) -> RunState:
        """Load last.pt's training state into the given objects.

        Raises:
            CheckpointError: last.pt does not fit these settings (e.g. SRP switched on or off).
        """
        ckpt = self.last_checkpoint()
        extra = ckpt.extra
        try:
            model.load_state_dict(ckpt.state_dict)
            optimiser.load_state_dict(extra["optimiser"])
            if srp is not None:
                if extra.get("srp") is None:
                    raise CheckpointError(f"{self.last_path} was trained without SRP; resume with SRP off")
                srp.load_state_dict(extra["srp"])
            rng.bit_generator.state = extra["numpy_rng"]
            gen.set_state(extra["torch_rng"])
            return RunState(int(extra["epoch"]), list(extra["history"]), extra["best_val_dice"], extra["best_epoch"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.last_path} cannot be resumed with these settings ({exc})") from None

    def record(self, state: RunState, improved: bool, model: LiteNeXt, srp: Any, optimiser: torch.optim.Optimizer,
               inference: InferenceConfig, cfg: TrainConfig, rng: np.random.Generator, gen: torch.Generator) -> None:
        """Write the history, best.pt when the epoch improved on the best, and last.pt."""
        if self.path is None:
            return
        _write_history(self.path / "history.csv", state.history)
        card = model_card(cfg, state.best, state.best_epoch)
        if improved:
            save_checkpoint(self.best_path, model, inference, card,
                            extra={"train_config": cfg.to_dict(), "epoch": state.epoch})
        extra = {
            "train_config": cfg.to_dict(),
            "epoch": state.epoch,
            "history": [dict(row) for row in state.history],
            "best_val_dice": state.best,
            "best_epoch": state.best_epoch,
            "optimiser": optimiser.state_dict(),
            "srp": srp.state_dict() if srp is not None else None,
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": gen.get_state(),
        }
        save_checkpoint(self.last_path, model, inference, card, extra=extra)

    def best_checkpoint(self) -> Path | None:
        """best.pt if the run has written one."""
        return self.best_path if self.path is not None and self.best_path.exists() else None


def _write_history(path: Path, history: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
