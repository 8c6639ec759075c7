"""Training on several processes with torch's DistributedDataParallel, as started by torchrun.

    torchrun --nproc_per_node 2 --no-python napari-litenext train --device cpu ...

``train()`` calls ``Distributed.start``: under torchrun (``WORLD_SIZE`` > 1 in the environment)
the process joins the others, over gloo on the CPU or NCCL on CUDA (one GPU per process, the one
numbered by its local rank), once: the process group then serves every later ``train()`` of the
process and is taken down when it exits (a group set up again would find the rendezvous keys of
the first one in torchrun's store). A process group the caller has set up is used as it is.
Outside torchrun the context is a single process and every method below is a no-op.

A run on N processes is the run one process makes with the same settings, up to the order of
floating-point sums:

* ``batch_size`` is the whole batch. Every process draws the same batches, patch positions and
  augmentations from the same seeded generators and builds only its share of the rows
  (``BatchSampler(rank=, world=)``); the shares are disjoint and together make the batch.
* Each process's loss is the mean over its share, scaled by ``share x world / batch``, so DDP's
  average of the gradients is the gradient of the batch's mean loss, even for uneven shares.
* Parameters start equal (the same seed; DDP also copies rank 0's when wrapping) and receive the
  same averaged gradients, so the optimiser steps, and SRP's EMA teacher updated from the
  parameters, stay identical on every process without further communication.
* Validation is shared out by image; the per-image Dice scores are gathered and every process
  takes their mean in image order, which gives all of them, and a single process, the same
  number: the best-model decision needs no broadcast.
* Only rank 0 writes the run folder (the CLI also prints only there); resuming reads last.pt on
  every process, so the folder must be on a file system they all see.
"""

from __future__ import annotations

import atexit
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import SettingsError, TrainingError
from ..network.device import resolve_device
from .data import Sample, Share
from .validation import validate

if TYPE_CHECKING:  # pragma: no cover
    from ..network.model import LiteNeXt
    from .srp import SRP

__all__ = ["Distributed", "TrainingForward", "process_rank"]


def process_rank() -> int:
    """This process's rank among torchrun's (0 outside torchrun): only rank 0 should print."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


class TrainingForward(nn.Module):
    """The training forward pass as one module (what DDP wraps): logits and SRP's loss.

    DDP averages the gradients of the parameters used in its module's ``forward``; SRP's projector
    and predictor are trained too, so they are part of it.
    """

    def __init__(self, model: LiteNeXt, srp: SRP | None) -> None:
        super().__init__()
        self.model, self.srp = model, srp

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.model.encode(x)
        logits = self.model.decode(feats)
        rep = self.srp.loss(feats[-1], x) if self.srp is not None else torch.zeros((), device=x.device)
        return logits, rep


@dataclass
class Distributed:
    """Where this process stands in a distributed run (rank 0 of 1 when alone).

    Attributes:
        rank: this process's rank.
        world: number of processes.
        device: this process's training device.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and reports (rank 0)."""
        return self.rank == 0

    @classmethod
    def start(cls, device: str | None = "auto") -> "Distributed":
        """Resolve the device and, under torchrun, join the other processes.

        Args:
            device: as ``TrainConfig.device``; under torchrun, "cuda" (or "auto" with GPUs) means
                the GPU of this process's local rank.

        Raises:
            SettingsError: the device does not exist, is not usable for distributed training (MPS,
                a numbered GPU), or the node has fewer GPUs than processes.
            TrainingError: the processes could not join each other.
        """
        try:
            dev = resolve_device(device)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        joined = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=dev)
        if not dist.is_available():
            raise SettingsError("this torch build has no torch.distributed; run a single process")
        dev, backend = _process_device(dev)
        if joined:
            return cls(dist.get_rank(), world, dev)
        if backend == "nccl" and not dist.is_nccl_available():
            raise SettingsError("this torch build has no NCCL for training on several GPUs; use --device cpu")
        try:
            dist.init_process_group(backend, init_method="env://",
                                    device_id=dev if dev.type == "cuda" else None)
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(f"could not join the other training processes ({reason}); start every process "
                                "with torchrun and check MASTER_ADDR and MASTER_PORT") from None
        atexit.register(dist.destroy_process_group)
        return cls(dist.get_rank(), dist.get_world_size(), dev)

    def wrap(self, model: LiteNeXt, srp: SRP | None) -> nn.Module:
        """The module to call for the forward pass: ``TrainingForward``, inside DDP when distributed."""
        net = TrainingForward(model, srp)
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        # The fusion's 1x1 weight, read through a flatten, gets gradients whose strides differ from
        # the channels-last parameter's in size-1 dimensions only: the same memory order, which DDP
        # copies (4096 numbers) but warns about on every run.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)

    def loss_scale(self, share: Share) -> float:
        """Factor for this process's mean loss so that DDP's gradient average is the batch's."""
        return share.size * self.world / share.total

    def batch_mean(self, losses: np.ndarray, share: Share) -> np.ndarray:
        """The batch's mean losses from each process's mean over its share (for the log)."""
        if self.world == 1:
            return losses
        parts = torch.tensor(losses * (share.size / share.total), dtype=torch.float64, device=self.device)
        dist.all_reduce(parts)
        return parts.cpu().numpy()

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on one (a Stop asked on any process)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def validate(self, model: LiteNeXt, samples: Sequence[Sample]) -> float | None:
        """``validation.validate`` with the images shared out; the same value on every process."""
        if self.world == 1:
            return validate(model, samples)
        mine = {i: validate(model, [samples[i]]) for i in range(self.rank, len(samples), self.world)}
        parts: list = [None] * self.world
        dist.all_gather_object(parts, mine)
        scores = {i: s for part in parts for i, s in part.items()}
        kept = [scores[i] for i in range(len(samples)) if scores[i] is not None]
        return float(np.mean(kept)) if kept else None

    def finish(self) -> None:
        """Wait until rank 0 has written its files, so that every process can read them."""
        if self.world > 1:
            dist.barrier()


def _process_device(dev: torch.device) -> tuple[torch.device, str]:
    """This process's device and the backend for it."""
    if dev.type == "cpu":
        return dev, "gloo"
    if dev.type != "cuda":
        raise SettingsError(f"training on several processes runs on CPUs (gloo) or CUDA GPUs (NCCL), not on "
                            f"{dev.type}; use --device cpu")
    if dev.index is not None:
        raise SettingsError(f"--device {dev}: under torchrun every process takes the GPU of its local rank; give "
                            "--device cuda and choose the GPUs with CUDA_VISIBLE_DEVICES")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise SettingsError(f"this node starts more training processes than its {count} GPU(s); run torchrun "
                            f"with --nproc_per_node {count} or fewer")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev, "nccl"
