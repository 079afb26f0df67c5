"""Each loss term against a computation written out by hand."""
import math

import pytest
import torch

from edge_ser_torch.config import LossConfig
from edge_ser_torch.losses import kl_teacher_student, self_distillation_loss, similarity
from edge_ser_torch.model import ExitOutput


def _ce(logits, label):
    return -math.log(math.exp(logits[label]) / sum(math.exp(v) for v in logits))


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_similarities_match_hand_computation():
    t = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    s = torch.tensor([[2.0, 2.0], [1.0, -1.0]])
    l1 = (1 + 0 + 1 + 2) / 4
    l2 = (1 + 0 + 1 + 4) / 4
    cos0 = (1 * 2 + 2 * 2) / (math.sqrt(5) * math.sqrt(8))
    cos1 = (0 * 1 + 1 * -1) / (1 * math.sqrt(2))
    cos = -(cos0 + cos1) / 2
    assert similarity(t, s, "l1").item() == pytest.approx(l1)
    assert similarity(t, s, "l2").item() == pytest.approx(l2)
    assert similarity(t, s, "cos").item() == pytest.approx(cos, abs=1e-6)
    assert similarity(t, s, "l1+cos").item() == pytest.approx(l1 + cos, abs=1e-6)
    assert similarity(t, s, "l2+cos").item() == pytest.approx(l2 + cos, abs=1e-6)
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity(t, s, "l3")


def test_kl_is_teacher_to_student():
    teacher, student = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]
    p, q = _softmax(teacher), _softmax(student)
    expected = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    got = kl_teacher_student(torch.tensor([teacher]), torch.tensor([student])).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # and not the reverse direction, which differs for these distributions
    reverse = sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q, strict=True))
    assert abs(got - reverse) > 1e-3


def _exit(logits, embedding, linear):
    return ExitOutput(torch.tensor([logits]), torch.tensor([embedding]), torch.tensor([linear]))


@pytest.mark.parametrize("level", ["embedding", "linear"])
def test_total_loss_combines_terms_with_weights(level):
    teacher = _exit([1.0, 0.0, -1.0], [1.0, 1.0], [0.5, 0.0])
    s3 = _exit([0.0, 1.0, 0.0], [0.0, 1.0], [0.0, 0.0])
    s8 = _exit([0.5, 0.5, 0.0], [2.0, 1.0], [1.5, 1.0])
    outputs = {3: s3, 8: s8, 12: teacher}
    y = torch.tensor([0])
    config = LossConfig(alpha=0.5, beta=2.0, gamma=0.3, similarity="l1", level=level)
    terms = self_distillation_loss(outputs, y, 12, config)

    ce = _ce([1.0, 0.0, -1.0], 0) + 0.3 * (_ce([0.0, 1.0, 0.0], 0) + _ce([0.5, 0.5, 0.0], 0)) / 2
    p = _softmax([1.0, 0.0, -1.0])
    kl = sum(
        sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, _softmax(s), strict=True)) for s in ([0.0, 1.0, 0.0], [0.5, 0.5, 0.0])
    ) / 2
    if level == "embedding":
        sim = ((1 + 0) / 2 + (1 + 0) / 2) / 2
    else:
        sim = ((0.5 + 0) / 2 + (1 + 1) / 2) / 2
    assert terms.ce.item() == pytest.approx(ce, rel=1e-5)
    assert terms.kl.item() == pytest.approx(kl, rel=1e-5)
    assert terms.sim.item() == pytest.approx(sim, rel=1e-5)
    assert terms.total.item() == pytest.approx(ce + 0.5 * kl + 2.0 * sim, rel=1e-5)


def test_teacher_gets_no_gradient_from_distillation_terms_when_detached():
    t_logits = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t_emb = torch.tensor([[1.0, 2.0]], requires_grad=True)
    s_logits = torch.tensor([[0.0, 1.0]], requires_grad=True)
    outputs = {12: ExitOutput(t_logits, t_emb, t_emb), 3: ExitOutput(s_logits, t_emb * 0 + 3, t_emb * 0)}
    config = LossConfig(gamma=0.0)  # leave only the teacher's own CE acting on it
    self_distillation_loss(outputs, torch.tensor([0]), 12, config).total.backward()
    p = torch.softmax(t_logits.detach(), -1)
    assert torch.allclose(t_logits.grad, p - torch.tensor([[1.0, 0.0]]))  # pure CE gradient
    assert s_logits.grad.abs().sum() > 0


def test_no_exits_is_plain_cross_entropy():
    out = {12: _exit([2.0, 0.0], [0.0], [0.0])}
    terms = self_distillation_loss(out, torch.tensor([1]), 12, LossConfig())
    assert terms.total.item() == pytest.approx(_ce([2.0, 0.0], 1), rel=1e-6)
