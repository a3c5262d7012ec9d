"""Symmetric InfoNCE (CLIP / CLAP) loss.

For two modalities with L2-normalised embeddings ``x, y`` of shape [N, d] and the
exp'd temperature multiplier ``t`` (0-d, logits = t * cosine)::

    logits_ij = t * <x_i, y_j>                           # [N, N]
    L = 1/2 * ( CE(logits, arange(N)) + CE(logits^T, arange(N)) )

with CE the mean row-wise cross-entropy, i.e.
``CE(Z, arange) = -(1/N) sum_i log softmax_j(Z_ij)[j = i]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.losses import distributed as D
from audiocl.losses._common import (
    as_scale,
    check_same_shape,
    get_embeddings,
    get_logit_scale,
    two_modalities,
)


def clip_loss(x: Tensor, y: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE on one (possibly gathered) batch.

    Args:
        x: [N, d] embeddings of modality A (row i pairs with row i of ``y``).
        y: [N, d] embeddings of modality B.
        logit_scale: exp'd temperature ``t`` (0-d tensor or float).
    Returns:
        0-d tensor, ``(CE(t x y^T) + CE(t y x^T)) / 2``.
    """
    check_same_shape([x, y])
    t = as_scale(logit_scale, x)
    logits = t * (x @ y.T)
    labels = torch.arange(x.shape[0], device=x.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def clip_loss_local(
    x_local: Tensor,
    y_local: Tensor,
    x_all: Tensor,
    y_all: Tensor,
    logit_scale: Tensor | float,
    offset: int,
) -> Tensor:
    """This rank's share of the global CLIP loss (open_clip's "local loss").

    Rows ``offset .. offset+n`` of the gathered batch ``x_all, y_all`` ([N, d]) are
    this rank's ``x_local, y_local`` ([n, d]). Returns
    ``W/N * 1/2 * sum_{i local} (CE row i of x->y + CE row i of y->x)``, so the mean
    of the ranks' values equals :func:`clip_loss` on the full batch; with the
    summed gather gradient (see ``distributed``) DDP reproduces its gradient.
    Each rank computes [n, N] logits instead of [N, N].
    """
    t = as_scale(logit_scale, x_local)
    n_total = x_all.shape[0]
    labels = torch.arange(offset, offset + x_local.shape[0], device=x_local.device)
    lxy = F.cross_entropy(t * (x_local @ y_all.T), labels, reduction="sum")
    lyx = F.cross_entropy(t * (y_local @ x_all.T), labels, reduction="sum")
    return 0.5 * (lxy + lyx) * (D.world_size() / n_total)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE between two named modalities of the model's output dict.

    Embeddings are gathered over ranks with gradient before the logits; with
    ``local_loss=True`` each rank computes only its own rows (same DDP gradient,
    less memory; the value then differs per rank, average it for logging).
    """

    def __init__(self, modalities: Sequence[str] = ("audio", "text"), local_loss: bool = False):
        super().__init__()
        two_modalities(modalities, "clip")
        self.modalities = tuple(modalities)
        self.local_loss = local_loss

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = get_embeddings(outputs, self.modalities)
        t = get_logit_scale(outputs)
        xa, ya = D.gather_with_grad(x), D.gather_with_grad(y)
        if self.local_loss and D.is_distributed():
            offset, _ = D.local_offset(x.shape[0], x.device)
            return clip_loss_local(x, y, xa, ya, t, offset)
        return clip_loss(xa, ya, t)
