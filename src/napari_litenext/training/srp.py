"""Self-embedding Representation Parallel (SRP), as the specification reconstructs it.

A BYOL-like auxiliary task used only in training: the student (the full LiteNeXt) embeds its view
of an image and predicts the embedding that a teacher, an exponential moving average of the
student's encoder, gives to another augmented view of the same image.

    embedding  = global-avg-pool(e4) + global-max-pool(e4)           (128-vector)
    student    p = predictor(projector(embedding(student encoder, view a)))
    teacher    z = projector_ema(embedding(encoder_ema, view b)), no gradient
    L_rep      = mean over the two orders (a, b) and (b, a) of 2 - 2 cos(p, z)

The teacher is updated after each optimiser step, ``ema = tau * ema + (1 - tau) * student``, and
never receives gradients. Exported models contain only the segmentation network.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.model import LiteNeXt

__all__ = ["SRP", "embed"]


def embed(e4: Tensor) -> Tensor:
    """B x C x h x w -> B x C: global average plus global max pooling."""
    return e4.mean(dim=(2, 3)) + e4.amax(dim=(2, 3))


def _mlp(dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))


class _Encoder(nn.Module):
    """The stem and stages of a LiteNeXt, sharing parameter names with it so EMA can zip them."""

    def __init__(self, model: LiteNeXt) -> None:
        super().__init__()
        self.stem = model.stem
        self.stages = model.stages

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.down(x))
        return x


class SRP(nn.Module):
    """Student projector and predictor, EMA teacher, and the representation loss.

    Args:
        student: the segmentation network being trained.
        tau: EMA decay of the teacher (0.99 in the specification).
        hidden: hidden width of the projector and predictor MLPs (256).
        dim: embedding width (128; the deepest encoder stage's channels by default).

    The module's trainable parameters are the student projector and predictor; give them to the
    optimiser alongside the student's.
    """

    def __init__(self, student: LiteNeXt, tau: float = 0.99, hidden: int = 256, dim: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"SRP tau must be in [0, 1), got {tau}")
        channels = student.config.widths[-1]
        dim = dim or channels
        self.tau = tau
        self.projector = _mlp(channels, hidden, dim)
        self.predictor = _mlp(dim, hidden, dim)
        self.teacher_encoder = copy.deepcopy(_Encoder(student))
        self.teacher_projector = copy.deepcopy(self.projector)
        for p in self.teacher_parameters():
            p.requires_grad_(False)

    def teacher_parameters(self):
        """Parameters of the teacher (EMA encoder and projector); never trained by gradients."""
        yield from self.teacher_encoder.parameters()
        yield from self.teacher_projector.parameters()

    def student_parameters(self):
        """Trainable SRP parameters (projector and predictor)."""
        yield from self.projector.parameters()
        yield from self.predictor.parameters()

    def loss(self, student_e4: Tensor, views: Tensor) -> Tensor:
        """Symmetrised representation loss.

        Args:
            student_e4: the student's e4 for the 2N views, ordered [view a of each image,
                view b of each image] (2N x C x h x w).
            views: the same 2N network inputs (2N x 3 x H x W), for the teacher.

        Returns:
            Scalar loss in [0, 4].
        """
        n = views.shape[0] // 2
        if views.shape[0] != 2 * n or student_e4.shape[0] != views.shape[0]:
            raise ValueError("SRP needs two views per image: a batch of 2N stacked as [views a, views b]")
        p = self.predictor(self.projector(embed(student_e4)))
        with torch.no_grad():
            self.teacher_encoder.eval()
            z = self.teacher_projector(embed(self.teacher_encoder(views)))
        # Swapping the halves pairs each student prediction with the teacher's other view.
        z_other = torch.cat([z[n:], z[:n]], dim=0)
        return (2 - 2 * F.cosine_similarity(p, z_other.detach(), dim=1)).mean()

    @torch.no_grad()
    def update_teacher(self, student: LiteNeXt) -> None:
        """EMA step of the teacher towards the student (call after each optimiser step)."""
        pairs = [(self.teacher_encoder.stem, student.stem), (self.teacher_encoder.stages, student.stages),
                 (self.teacher_projector, self.projector)]
        for teacher, source in pairs:
            for t, s in zip(teacher.parameters(), source.parameters()):
                t.lerp_(s.detach(), 1.0 - self.tau)
