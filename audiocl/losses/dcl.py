"""Decoupled contrastive loss (DCL, Yeh et al. 2022): the positive leaves the denominator.

For L2-normalised ``x, y`` [N, d] and logits ``l = t * x y^T`` [N, N]::

    L_{x->y, i} = -l_ii + logsumexp_{j != i} l_ij
    L = 1/2 * ( mean_i L_{x->y, i} + mean_i L_{y->x, i} )   with L_{y->x} on l^T

The positive is excluded by setting the diagonal to -inf before the
log-sum-exp, which removes it exactly; adding log(eps) instead leaks
``eps * exp(l_ii)`` back in, which is not small when t is large (t = 100).
Needs N >= 2 (a row must have a negative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import (
    as_scale,
    check_same_shape,
    get_embeddings,
    get_logit_scale,
    two_modalities,
)


def _dcl_rows(logits: Tensor) -> Tensor:
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    neg = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    return neg - logits.diagonal()


def dcl_loss(x: Tensor, y: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric DCL on ``x, y`` [N, d] with multiplier ``t``; returns 0-d."""
    check_same_shape([x, y])
    if x.shape[0] < 2:
        raise AudioclError("dcl needs a batch of at least 2 (each row needs a negative)")
    logits = as_scale(logit_scale, x) * (x @ y.T)
    return 0.5 * (_dcl_rows(logits).mean() + _dcl_rows(logits.T).mean())


class DclLoss(nn.Module):
    """DCL between two named modalities; embeddings gathered over ranks with gradient."""

    def __init__(self, modalities: Sequence[str] = ("audio", "text")):
        super().__init__()
        two_modalities(modalities, "dcl")
        self.modalities = tuple(modalities)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = D.gather_many(get_embeddings(outputs, self.modalities))
        return dcl_loss(x, y, get_logit_scale(outputs))
