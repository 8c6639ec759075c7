import pytest
import torch

from napari_litenext.config import ModelConfig
from napari_litenext.network.model import LiteNeXt
from napari_litenext.training.srp import SRP, embed

SMALL = ModelConfig(base_width=4, fusion_dim=8)


def test_embed_is_avg_plus_max():
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    assert embed(x).tolist() == [[4.0 + 7.0]]


def test_teacher_gets_no_gradient_and_follows_ema():
    torch.manual_seed(0)
    student = LiteNeXt(SMALL)
    srp = SRP(student, tau=0.9)
    assert all(not p.requires_grad for p in srp.teacher_parameters())
    x = torch.rand(4, 3, 32, 32)
    feats = student.encode(x)
    loss = srp.loss(feats[-1], x)
    assert 0.0 <= float(loss.detach()) <= 4.0
    loss.backward()
    assert all(p.grad is None for p in srp.teacher_parameters())
    assert student.stem.conv.weight.grad is not None and srp.predictor[0].weight.grad is not None

    before = srp.teacher_encoder.stem.conv.weight.detach().clone()
    with torch.no_grad():
        student.stem.conv.weight.add_(1.0)
    srp.update_teacher(student)
    expected = 0.9 * before + 0.1 * student.stem.conv.weight
    torch.testing.assert_close(srp.teacher_encoder.stem.conv.weight, expected)


def test_teacher_is_a_copy_not_the_student():
    student = LiteNeXt(SMALL)
    srp = SRP(student)
    assert srp.teacher_encoder.stem.conv.weight.data_ptr() != student.stem.conv.weight.data_ptr()


def test_loss_pairs_each_view_with_the_other():
    # identical views through identical student and teacher projectors: the only mismatch comes
    # from the predictor; making it the identity makes the loss exactly zero
    student = LiteNeXt(SMALL)
    srp = SRP(student)
    srp.predictor = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    views = torch.cat([x, x])
    assert float(srp.loss(student.encode(views)[-1], views).detach()) == pytest.approx(0.0, abs=1e-5)


def test_odd_batch_is_refused():
    student = LiteNeXt(SMALL)
    x = torch.rand(3, 3, 32, 32)
    with pytest.raises(ValueError, match="two views"):
        SRP(student).loss(student.encode(x)[-1], x)


def test_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        SRP(LiteNeXt(SMALL), tau=1.0)
