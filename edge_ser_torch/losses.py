"""The self-distillation loss, term by term as in the paper:

    L  = Lc + alpha * Lk + beta * Ls
    Lc = CE(O, y) + gamma * mean_a CE(O_a, y)
    Lk = mean_a KL(O || O_a)              teacher distribution p = softmax(O), student q = softmax(O_a)
    Ls = mean_a sim(H_N, H_Ma)            embedding level (or sim(H_L, H_La) at the linear level)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LossConfig
from .errors import InputError
from .model import ExitOutput

SIMILARITIES = ("l1", "l2", "cos", "l1+cos", "l2+cos")


def similarity(teacher: torch.Tensor, student: torch.Tensor, kind: str) -> torch.Tensor:
    """Distance between (B, D) feature batches, averaged over the batch; lower = more alike.

    l1: mean |t - s|;  l2: mean (t - s)^2;  cos: -cos(t, s) (negative cosine);  sums for the pairs.
    """
    if kind not in SIMILARITIES:
        raise InputError(f"unknown similarity {kind!r}; choose one of {', '.join(SIMILARITIES)}")
    total = teacher.new_zeros(())
    if "l1" in kind:
        total = total + F.l1_loss(student, teacher)
    if "l2" in kind:
        total = total + F.mse_loss(student, teacher)
    if "cos" in kind:
        total = total - F.cosine_similarity(student, teacher, dim=-1).mean()
    return total


def kl_teacher_student(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || q_student) = sum p (log p - log q), averaged over the batch."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1), log_target=True, reduction="batchmean"
    )


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: torch.Tensor  # Lc
    kl: torch.Tensor  # Lk
    sim: torch.Tensor  # Ls

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "ce", "kl", "sim")}


def self_distillation_loss(
    outputs: dict[int, ExitOutput], labels: torch.Tensor, teacher_layer: int, config: LossConfig
) -> LossTerms:
    """L for one batch; `outputs` maps exit layer -> ExitOutput, the teacher at `teacher_layer`."""
    if config.level not in ("embedding", "linear"):
        raise InputError(f"loss level must be 'embedding' or 'linear', got {config.level!r}")
    teacher = outputs[teacher_layer]
    students = [out for layer, out in sorted(outputs.items()) if layer != teacher_layer]
    ce = F.cross_entropy(teacher.logits, labels)
    if not students:  # a plain fine-tuning run (no exits): L = CE
        zero = ce.new_zeros(())
        return LossTerms(ce, ce, zero, zero)

    t_logits, t_features = teacher.logits, getattr(teacher, config.level)
    if config.detach_teacher:
        t_logits, t_features = t_logits.detach(), t_features.detach()
    ce = ce + config.gamma * torch.stack([F.cross_entropy(s.logits, labels) for s in students]).mean()
    kl = torch.stack([kl_teacher_student(t_logits, s.logits) for s in students]).mean()
    sim = torch.stack([similarity(t_features, getattr(s, config.level), config.similarity) for s in students]).mean()
    return LossTerms(ce + config.alpha * kl + config.beta * sim, ce, kl, sim)
