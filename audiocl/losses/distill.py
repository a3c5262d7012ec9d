"""Distillation to a teacher's embeddings (tinyCLAP-style knowledge transfer).

Shapes: student embeddings ``s`` [N, d], teacher embeddings ``e`` [N, d'] of the
same items (teachers are never updated: their embeddings are detached).

* ``mode="cosine"`` (d = d'):  ``L = mean_i (1 - cos(s_i, e_i))``
* ``mode="mse"``    (d = d'):  ``L = mean_i ||s_i - e_i||^2``
* ``mode="kl"`` (relational, any d, d'): match the student's similarity
  distribution to the teacher's. With a paired modality (student ``y`` [N, d],
  teacher ``f`` [N, d'], e.g. the text tower), student logits ``S = t_s s y^T``
  and teacher logits ``T = t_t e f^T`` [N, N]::

      L = 1/2 * ( mean_i KL(softmax(T_i.) || softmax(S_i.))
                + mean_j KL(softmax(T_.j) || softmax(S_.j)) )

  with ``KL(p || q) = sum_k p_k (log p_k - log q_k)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import as_scale, check_same_shape, get_logit_scale


def embedding_distill_loss(student: Tensor, teacher: Tensor, mode: str = "cosine") -> Tensor:
    """``mean_i (1 - cos(s_i, e_i))`` or ``mean_i ||s_i - e_i||^2``; [N, d] each -> 0-d."""
    check_same_shape([student, teacher])
    teacher = teacher.detach()
    if mode == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if mode == "mse":
        return (student - teacher).pow(2).sum(1).mean()
    raise AudioclError(f"embedding distillation mode must be 'cosine' or 'mse', got {mode!r}")


def _kl_rows(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    logp = torch.log_softmax(teacher_logits, dim=1)
    logq = torch.log_softmax(student_logits, dim=1)
    return (logp.exp() * (logp - logq)).sum(1).mean()


def similarity_distill_loss(
    student_x: Tensor,
    student_y: Tensor,
    teacher_x: Tensor,
    teacher_y: Tensor,
    student_scale: Tensor | float,
    teacher_scale: Tensor | float,
) -> Tensor:
    """Symmetric KL(teacher || student) between [N, N] similarity distributions; 0-d."""
    check_same_shape([student_x, student_y])
    check_same_shape([teacher_x, teacher_y])
    if student_x.shape[0] != teacher_x.shape[0]:
        raise AudioclError("distill: student and teacher batches differ in size")
    s = as_scale(student_scale, student_x) * (student_x @ student_y.T)
    with torch.no_grad():
        t = as_scale(teacher_scale, teacher_x) * (teacher_x.detach() @ teacher_y.detach().T)
    return 0.5 * (_kl_rows(t, s) + _kl_rows(t.T, s.T))


class DistillLoss(nn.Module):
    """Distil the ``student`` modality's embeddings towards a teacher's.

    Teacher embeddings are read from ``outputs["embeddings"]`` or from
    ``batch["teacher_embeddings"]`` under ``teacher`` (and ``teacher_pair`` for
    ``mode="kl"``); training fills the latter from the config's ``distill``
    section (:mod:`audiocl.train.teacher`). ``teacher_scale`` is the teacher's
    exp'd temperature multiplier (default: ``batch["teacher_logit_scale"]``,
    the teacher model's own, else the student's).

    tinyCLAP's loss (its Eq. 7, audio only: the student's audio embedding
    towards the teacher's, both in the shared space) is ``mode="cosine"``:
    ``1 - cos`` has the gradient of their ``-cos``.
    """

    def __init__(
        self,
        student: str = "audio",
        teacher: str = "teacher_audio",
        mode: str = "cosine",
        pair: str | None = None,
        teacher_pair: str | None = None,
        teacher_scale: float | None = None,
    ):
        super().__init__()
        if mode not in ("cosine", "mse", "kl"):
            raise AudioclError(f"distill mode must be 'cosine', 'mse' or 'kl', got {mode!r}")
        if mode == "kl" and (pair is None or teacher_pair is None):
            raise AudioclError("distill mode 'kl' needs pair= and teacher_pair= modality names")
        self.student, self.teacher, self.mode = student, teacher, mode
        self.pair, self.teacher_pair, self.teacher_scale = pair, teacher_pair, teacher_scale

    @staticmethod
    def _lookup(name: str, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None) -> Tensor:
        if name in outputs["embeddings"]:
            return outputs["embeddings"][name]
        if batch is not None and name in batch.get("teacher_embeddings", {}):
            return torch.as_tensor(batch["teacher_embeddings"][name])
        raise AudioclError(f"distill: no embeddings named '{name}' in outputs or batch['teacher_embeddings']")

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        s = D.gather_with_grad(self._lookup(self.student, outputs, batch))
        e = D.gather_with_grad(self._lookup(self.teacher, outputs, batch).detach().to(s))
        if self.mode != "kl":
            return embedding_distill_loss(s, e, self.mode)
        assert self.pair is not None and self.teacher_pair is not None  # checked in __init__ for kl
        y = D.gather_with_grad(self._lookup(self.pair, outputs, batch))
        f = D.gather_with_grad(self._lookup(self.teacher_pair, outputs, batch).detach().to(s))
        t = get_logit_scale(outputs)
        tt: Tensor | float = t
        if self.teacher_scale is not None:
            tt = self.teacher_scale
        elif batch is not None and "teacher_logit_scale" in batch:
            tt = torch.as_tensor(batch["teacher_logit_scale"]).to(s)
        return similarity_distill_loss(s, y, e, f, t, tt)


__all__ = ["DistillLoss", "embedding_distill_loss", "similarity_distill_loss"]
