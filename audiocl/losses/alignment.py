"""Alignment and uniformity (Wang & Isola 2020), used for the "contrastive gap".

For paired L2-normalised ``x, y`` [N, d]::

    L_align(x, y)  = (1/N) sum_i ||x_i - y_i||^2
    L_unif(x; s)   = log( (2 / (N (N-1))) sum_{i<j} exp(-s ||x_i - x_j||^2) ),  s = 2

The log-mean-exp is ``logsumexp(-s D_ij over i<j) - log(N (N-1) / 2)`` and the
squared distances come from the Gram matrix, ``D_ij = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>``
(clamped at 0): a polynomial with a finite gradient even when two rows coincide,
unlike ``torch.pdist`` whose sqrt has an infinite (NaN) gradient at 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import check_same_shape, get_embeddings, two_modalities


def alignment_loss(x: Tensor, y: Tensor) -> Tensor:
    """``mean_i ||x_i - y_i||^2`` for ``x, y`` [N, d]; 0-d."""
    check_same_shape([x, y])
    return (x - y).pow(2).sum(1).mean()


def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances [N, N] from the Gram matrix (>= 0)."""
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)


def uniformity_loss(x: Tensor, s: float = 2.0) -> Tensor:
    """``log mean_{i<j} exp(-s ||x_i - x_j||^2)`` for ``x`` [N, d], N >= 2; 0-d."""
    n = x.shape[0]
    if n < 2:
        raise AudioclError("uniformity needs at least 2 embeddings")
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    d2 = squared_distances(x)[iu[0], iu[1]]
    return torch.logsumexp(-s * d2, dim=0) - math.log(d2.numel())


class AlignUniformLoss(nn.Module):
    """``align_weight * L_align(x, y) + uniform_weight * (L_unif(x) + L_unif(y)) / 2``.

    Embeddings are gathered over ranks with gradient (uniformity is a
    whole-batch quantity). Add it to a contrastive loss with ``CombinedLoss``.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("audio", "text"),
        align_weight: float = 1.0,
        uniform_weight: float = 1.0,
        s: float = 2.0,
    ):
        super().__init__()
        two_modalities(modalities, "align_uniform")
        self.modalities = tuple(modalities)
        self.align_weight, self.uniform_weight, self.s = align_weight, uniform_weight, s

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = D.gather_many(get_embeddings(outputs, self.modalities))
        out = x.new_zeros(())
        if self.align_weight:
            out = out + self.align_weight * alignment_loss(x, y)
        if self.uniform_weight:
            unif = 0.5 * (uniformity_loss(x, self.s) + uniformity_loss(y, self.s))
            out = out + self.uniform_weight * unif
        return out
