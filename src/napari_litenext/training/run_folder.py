"""The folder of one training run: best.pt, last.pt and history.csv, written as epochs end.

``best.pt`` is the model to use (the best validation Dice so far, never chosen on test data);
``last.pt`` adds what ``resume`` needs (optimiser, SRP and random-generator states, history).
Every write is atomic, so a stop, a crash, a kill or a full disk keeps the previous files whole.

Order of the writes, so that the folder can always be resumed: last.pt first, then best.pt, then
history.csv. A run stopped between the first two has a last.pt whose best epoch is that very epoch;
resuming writes best.pt from last.pt's weights, the file the uninterrupted run would have written.
A folder with best.pt but no last.pt (written by an older version, or last.pt lost) resumes from
best.pt with a fresh optimiser, and says so. A write that fails for lack of space ends the run with
one ``TrainingError`` naming the file, the free space and the epoch that resuming continues after.

The model card the checkpoints carry is made here, from the resolved settings.
"""

from __future__ import annotations

import csv
import errno
import io
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .. import __version__
from ..config import InferenceConfig, ModelCard
from ..errors import CheckpointError, DataError, TrainingError
from ..io.files import atomic_write, remove_stale
from ..network.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..network.model import LiteNeXt
from .config import TrainConfig

__all__ = ["RunFolder", "RunState", "HISTORY_FIELDS", "RUN_FILES", "model_card", "write_failure"]

HISTORY_FIELDS = ("epoch", "step", "lr", "loss", "loss_seg", "loss_rep", "val_dice", "seconds")
#: The files a run writes into its folder (the command line adds curves.png).
RUN_FILES = ("best.pt", "last.pt", "history.csv", "curves.png")

# torch.save reports a failed write as a RuntimeError from its zip writer, without an errno.
_TORCH_WRITE_FAILURE = ("inline_container", "PytorchStreamWriter", "file write failed")
# numpy's tofile (inside several writers) reports a short write as "N requested and M written".
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


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
        resume: continue the run whose last.pt (or, failing that, best.pt) is there.
        overwrite: allow replacing a run's files.

    Attributes:
        notes: what the user should know about the resumed run (e.g. a fresh optimiser); shown
            with the start event.
        saved_epoch: the epoch the folder's last.pt (or best.pt when resuming from it) holds:
            what resuming continues after. None while nothing resumable is on disk.

    Raises:
        DataError: the folder already holds a run and neither ``resume`` nor ``overwrite`` is set,
            or ``resume`` is set and the folder holds neither last.pt nor best.pt.
    """

    def __init__(self, path: str | Path | None, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.notes: list[str] = []
        self.saved_epoch: int | None = None
        self._resumed: Checkpoint | None = None
        self._from_best = False
        if self.path is None:
            if resume:
                raise DataError("cannot resume without an output folder; give the folder of the run to resume")
            return
        existing = [p.name for p in (self.best_path, self.last_path) if p.exists()]
        if existing and not (resume or overwrite):
            raise DataError(f"{self.path} already holds {', '.join(existing)}; choose another output folder, "
                            "resume that run, or allow overwriting")
        if resume and not existing:
            raise DataError(f"cannot resume: {self.path} holds neither last.pt nor best.pt (a run stopped "
                            "before its first epoch ended saves nothing); start the run again without resuming")
        # Temporary files of a run killed while writing (no live process holds them): this run's
        # files-to-be, so this run clears them.
        remove_stale(self.path, targets=lambda name: name in RUN_FILES)

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.path / "last.pt"

    def resume_checkpoint(self) -> Checkpoint:
        """The checkpoint a resumed run starts from: last.pt, or best.pt when last.pt is missing or unreadable.

        Raises:
            CheckpointError: neither file can be read.
        """
        if self._resumed is not None:
            return self._resumed
        problem = "is missing"
        if self.last_path.exists():
            try:
                self._resumed = load_checkpoint(self.last_path)
                return self._resumed
            except CheckpointError as exc:
                if not self.best_path.exists():
                    raise
                problem = f"cannot be read ({exc})"
        self._resumed, self._from_best = load_checkpoint(self.best_path), True
        self.notes.append(f"{self.last_path} {problem}, so the run resumes from best.pt with a fresh optimiser "
                          "and random state: the result will differ from an uninterrupted run")
        return self._resumed

    def restore(self, model: LiteNeXt, srp: Any, optimiser: torch.optim.Optimizer, rng: np.random.Generator,
                gen: torch.Generator, inference: InferenceConfig | None = None,
                cfg: TrainConfig | None = None) -> RunState:
        """Load the resumed checkpoint's training state into the given objects.

        From last.pt everything is restored, so the run continues exactly as an uninterrupted one;
        when last.pt holds the best epoch but best.pt does not (stopped between the two writes),
        best.pt is written from it (needs ``inference`` and ``cfg``). From best.pt alone the
        weights are restored, the optimiser and random generators stay fresh, and the history is
        read back from history.csv where it is there.

        Raises:
            CheckpointError: last.pt does not fit these settings (e.g. SRP switched on or off).
            TrainingError: best.pt cannot be written (full disk).
        """
        ckpt = self.resume_checkpoint()
        if self._from_best:
            return self._restore_from_best(ckpt, model)
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
            state = RunState(int(extra["epoch"]), list(extra["history"]), extra["best_val_dice"],
                             extra["best_epoch"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.last_path} cannot be resumed with these settings ({exc})") from None
        self.saved_epoch = state.epoch
        if inference is not None and cfg is not None:
            self._complete_best(state, model, inference, cfg)
        return state

    def _restore_from_best(self, ckpt: Checkpoint, model: LiteNeXt) -> RunState:
        try:
            model.load_state_dict(ckpt.state_dict)
            epoch = int(ckpt.extra.get("epoch", 0))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.best_path} cannot be resumed with these settings ({exc})") from None
        history = [row for row in _read_history(self.path / "history.csv") if row["epoch"] <= epoch]
        best = next((row["val_dice"] for row in history if row["epoch"] == epoch), None)
        if best is None:
            best = ckpt.card.metrics.get("val_dice")
        self.saved_epoch = epoch
        return RunState(epoch, history, best, epoch)

    def _complete_best(self, state: RunState, model: LiteNeXt, inference: InferenceConfig,
                       cfg: TrainConfig) -> None:
        """Write best.pt from last.pt when the run stopped between the two writes of its best epoch."""
        if state.best_epoch is None:
            return
        held = _epoch_of(self.best_path)
        if held == state.best_epoch or (held is not None and held > state.epoch):
            # Consistent, or written ahead of last.pt by an older version: redoing those epochs rewrites it.
            return
        if state.best_epoch != state.epoch:
            self.notes.append(f"{self.best_path} does not hold the best epoch ({state.best_epoch}) and it cannot "
                              "be rebuilt; it will be replaced when validation improves")
            return
        self._save_best(state, model, inference, cfg)
        self.notes.append(f"best.pt of epoch {state.epoch} had not been saved when the run stopped; written "
                          "now from last.pt")

    def record(self, state: RunState, improved: bool, model: LiteNeXt, srp: Any, optimiser: torch.optim.Optimizer,
               inference: InferenceConfig, cfg: TrainConfig, rng: np.random.Generator, gen: torch.Generator) -> None:
        """Write last.pt, then best.pt when the epoch improved on the best, then the history.

        Raises:
            TrainingError: a file cannot be written (full disk, no permission); the message says
                which, and what resuming will continue from. Its ``resumable`` attribute is True
                when the folder holds a run to resume (the command line then names ``--resume``).
        """
        if self.path is None:
            return
        card = model_card(cfg, state.best, state.best_epoch)
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
        self._guarded(self.last_path, state.epoch, _nbytes(model.state_dict()) + _nbytes(extra),
                      lambda: save_checkpoint(self.last_path, model, inference, card, extra=extra))
        self.saved_epoch = state.epoch
        if improved:
            self._save_best(state, model, inference, cfg, card)
        history = self.path / "history.csv"
        self._guarded(history, state.epoch, 4096, lambda: _write_history(history, state.history))

    def _save_best(self, state: RunState, model: LiteNeXt, inference: InferenceConfig, cfg: TrainConfig,
                   card: ModelCard | None = None) -> None:
        card = card or model_card(cfg, state.best, state.best_epoch)
        extra = {"train_config": cfg.to_dict(), "epoch": state.epoch}
        self._guarded(self.best_path, state.epoch, _nbytes(model.state_dict()),
                      lambda: save_checkpoint(self.best_path, model, inference, card, extra=extra))

    def _guarded(self, path: Path, epoch: int, needed: int, write: Callable[[], Any]) -> None:
        """Run ``write``; a failure to write becomes a one-line ``TrainingError`` that says what to do."""
        try:
            write()
        except (OSError, RuntimeError) as exc:
            reason = write_failure(exc, path.parent, needed)
            if reason is None:
                raise
            if self.saved_epoch is None:
                then = "run it again (nothing of this run was saved)"
            else:
                then = f"resume the run: it continues after epoch {self.saved_epoch}"
            error = TrainingError(f"could not save {path} after epoch {epoch}: {reason}, then {then}")
            error.resumable = self.saved_epoch is not None  # lets the CLI name its resume option
            raise error from None

    def best_checkpoint(self) -> Path | None:
        """best.pt if the run has written one."""
        return self.best_path if self.path is not None and self.best_path.exists() else None


def write_failure(exc: BaseException, folder: Path, needed: int = 0) -> str | None:
    """Plain words for a failed file write and its fix, or None when ``exc`` is not one.

    Args:
        exc: what the writer raised: an ``OSError`` (with or without errno; numpy's short-write
            message "N requested and M written") or torch's zip-writer ``RuntimeError``.
        folder: where the file was being written (its free space is reported).
        needed: about how many bytes the file needs.
    """
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, RuntimeError) and not any(s in text for s in _TORCH_WRITE_FAILURE):
        return None  # a bug in what was being saved, not a failing disk: keep the traceback
    free = _free_bytes(folder)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        full = True
    elif code is None and (isinstance(exc, RuntimeError) or _SHORT_WRITE.search(text)):
        # A short write without errno: a full disk when the space left could not hold the file.
        full = free is not None and free < needed + (1 << 20)
        if not full:
            return "only part of the file could be written; check that the disk is still there and working"
    else:
        what = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
        return f"{what}; make sure the folder can be written to"
    left = f"{_size(free)} free" if free is not None else "no space left"
    needs = f", about {_size(needed)} needed" if needed else ""
    return f"the disk is full ({left}{needs}); free space there or move the run folder to a disk with room"


def _free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state (what a checkpoint of it will need on disk, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _epoch_of(path: Path) -> int | None:
    """The epoch a checkpoint of this run holds, or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        epoch = load_checkpoint(path).extra.get("epoch")
    except CheckpointError:
        return None
    return epoch if isinstance(epoch, int) else None


def _write_history(path: Path, history: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of a history.csv (numbers parsed, empty cells None); [] when missing or unreadable."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        parsed = []
        for row in rows:
            values = {k: (None if row.get(k) in (None, "") else float(row[k])) for k in HISTORY_FIELDS}
            values["epoch"], values["step"] = int(values["epoch"]), int(values["step"])
            parsed.append(values)
        return parsed
    except (OSError, ValueError, TypeError):
        return []
