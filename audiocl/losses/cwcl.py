"""Continuously weighted contrastive loss (CWCL, Srinivasa et al., NeurIPS 2023).

Cross-modal transfer from a frozen, pre-trained modality V (e.g. text) to a
trained modality U (e.g. speech). Instead of one positive per row, every pair
(i, j) is a positive with weight ``w_ij`` in [0, 1] given by V's own similarity
(the version implemented, the paper's choice for unit vectors)::

    w_ij = (1 + <v_i, v_j>) / 2            # [N, N], w_ii = 1, from frozen V (no gradient)
    l = t * u v^T                          # [N, N] logits, u trained, v frozen
    L_{U->V} = -(1/N) sum_i [ sum_j w_ij log softmax_j(l_i.) ] / sum_j w_ij
    L_{V->U} = the same on l^T (rows are v_i, softmax over u_j), same w (symmetric)
    L = L_{U->V} + L_{V->U}               # both directions summed, as in the paper

With ``w = I`` this is twice the CLIP loss. The weights use the frozen
modality's embeddings detached, because they are targets, not predictions.
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


def cwcl_weights(frozen: Tensor) -> Tensor:
    """``w_ij = (1 + <v_i, v_j>) / 2`` clamped to [0, 1] with ``w_ii = 1``; [N, N], no gradient."""
    v = frozen.detach()
    w = ((1.0 + v @ v.T) / 2.0).clamp(0.0, 1.0)
    w.fill_diagonal_(1.0)
    return w


def _weighted_rows(logits: Tensor, w: Tensor) -> Tensor:
    logp = torch.log_softmax(logits, dim=1)
    return -((w * logp).sum(1) / w.sum(1)).mean()


def cwcl_loss(
    trained: Tensor, frozen: Tensor, logit_scale: Tensor | float, weights: Tensor | None = None
) -> Tensor:
    """CWCL for ``trained`` (U) [N, d] and ``frozen`` (V) [N, d]; returns 0-d.

    ``weights`` [N, N] defaults to :func:`cwcl_weights` of ``frozen``.
    """
    check_same_shape([trained, frozen])
    w = cwcl_weights(frozen) if weights is None else weights
    logits = as_scale(logit_scale, trained) * (trained @ frozen.T)
    return _weighted_rows(logits, w) + _weighted_rows(logits.T, w.T)


class CwclLoss(nn.Module):
    """CWCL between ``modalities = (trained, frozen)``; weights from the frozen one."""

    def __init__(self, modalities: Sequence[str] = ("audio", "text"), frozen: str | None = None):
        super().__init__()
        two_modalities(modalities, "cwcl")
        frozen = modalities[1] if frozen is None else frozen
        if frozen not in modalities:
            raise AudioclError(f"cwcl frozen modality '{frozen}' is not one of {list(modalities)}")
        self.frozen = frozen
        self.trained = modalities[0] if modalities[1] == frozen else modalities[1]

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        u, v = D.gather_many(get_embeddings(outputs, (self.trained, self.frozen)))
        return cwcl_loss(u, v, get_logit_scale(outputs))
