"""MV-InfoNCE: one InfoNCE term per instance over all M >= 2 views (Koromilas et al. 2025).

Views ``u_1 .. u_M``, each [N, d] (row i of every view is instance i); logits
``s(l, i; m, j) = t * <u_l[i], u_m[j]>``. For instance i the positives are all
ordered pairs of distinct views of i, the negatives all pairs (l, m) of views
of i and of another instance j != i (the same view included)::

    Pos_i = { s(l, i; m, i) : l != m }                            M (M-1) terms
    Neg_i = { s(l, i; m, j) : j != i, all l, m }                  M^2 (N-1) terms
    L_i   = -logsumexp(Pos_i) + logsumexp(Pos_i U Neg_i)
    L     = mean_i L_i

This is the version implemented (one term per instance, positives summed inside
the log, as the paper's "all interactions in one term"). Everything is a sum
of exponentials handled by log-sum-exp; no product of per-view denominators is
ever formed (that overflows as views grow). For M = 2 each instance's
positives are (x_i, y_i) and (y_i, x_i).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import as_scale, check_same_shape, get_embeddings, get_logit_scale


def mv_infonce_loss(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """MV-InfoNCE over ``views`` (M >= 2 tensors [N, d], N >= 2); returns 0-d."""
    if len(views) < 2:
        raise AudioclError("mv-infonce needs at least two views")
    check_same_shape(views)
    u = torch.stack(list(views), 0)  # [M, N, d]
    M, N, _ = u.shape
    if N < 2:
        raise AudioclError("mv-infonce needs at least 2 instances")
    t = as_scale(logit_scale, u)
    s = t * torch.einsum("lid,mjd->ilmj", u, u)  # [N, M, M, N]
    dev = u.device
    same_inst = torch.eye(N, dtype=torch.bool, device=dev)  # [i, j]
    same_view = torch.eye(M, dtype=torch.bool, device=dev)  # [l, m]
    pos = same_inst[:, None, None, :] & ~same_view[None, :, :, None]
    keep = ~(same_inst[:, None, None, :] & same_view[None, :, :, None])  # all but self-pairs
    flat = s.reshape(N, -1)
    lse_pos = torch.logsumexp(flat.masked_fill(~pos.reshape(N, -1), float("-inf")), dim=1)
    lse_all = torch.logsumexp(flat.masked_fill(~keep.reshape(N, -1), float("-inf")), dim=1)
    return (lse_all - lse_pos).mean()


class MvInfoNceLoss(nn.Module):
    """MV-InfoNCE over the named modalities, gathered over ranks with gradient."""

    def __init__(self, modalities: Sequence[str]):
        super().__init__()
        if len(modalities) < 2:
            raise AudioclError("mv-infonce needs at least two modalities")
        self.modalities = tuple(modalities)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        xs = D.gather_many(get_embeddings(outputs, self.modalities))
        return mv_infonce_loss(xs, get_logit_scale(outputs))
