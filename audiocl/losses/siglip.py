"""Sigmoid (SigLIP) loss with a learnable bias.

For L2-normalised ``x, y`` [N, d], temperature multiplier ``t`` (exp'd) and bias ``b``::

    z_ij = +1 if i == j else -1                              # [N, N]
    L = -(1/N) * sum_{i,j} log sigmoid( z_ij * (t * <x_i, y_j> + b) )

Note the normalisation by N (rows), not N^2, as in the SigLIP paper. The model
owns ``t`` and ``b``; the paper initialises ``t = 10`` (log t = log 10) and
``b = -10`` so that the many negatives start with a small loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
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


def _signs(n_rows: int, n_cols: int, offset: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    rows = torch.arange(offset, offset + n_rows, device=device)[:, None]
    cols = torch.arange(n_cols, device=device)[None, :]
    return torch.where(rows == cols, 1.0, -1.0).to(dtype)


def siglip_loss(x: Tensor, y: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float) -> Tensor:
    """``-(1/N) sum_ij log sigmoid(z_ij (t x_i.y_j + b))`` for ``x, y`` [N, d]; returns 0-d."""
    check_same_shape([x, y])
    t, b = as_scale(logit_scale, x), as_scale(logit_bias, x)
    logits = t * (x @ y.T) + b
    z = _signs(x.shape[0], y.shape[0], 0, x.device, logits.dtype)
    return -F.logsigmoid(z * logits).sum() / x.shape[0]


def siglip_loss_local(
    x_local: Tensor, y_all: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float, offset: int
) -> Tensor:
    """This rank's rows of the global SigLIP loss, scaled by W/N so the rank mean is the loss.

    ``x_local`` [n, d] are rows ``offset..offset+n`` of the gathered batch; ``y_all`` [N, d].
    """
    t, b = as_scale(logit_scale, x_local), as_scale(logit_bias, x_local)
    logits = t * (x_local @ y_all.T) + b
    z = _signs(x_local.shape[0], y_all.shape[0], offset, x_local.device, logits.dtype)
    return -F.logsigmoid(z * logits).sum() * (D.world_size() / y_all.shape[0])


class SigLipLoss(nn.Module):
    """SigLIP between two named modalities; needs ``outputs["logit_bias"]``."""

    def __init__(self, modalities: Sequence[str] = ("audio", "text"), local_loss: bool = False):
        super().__init__()
        two_modalities(modalities, "siglip")
        self.modalities = tuple(modalities)
        self.local_loss = local_loss

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = get_embeddings(outputs, self.modalities)
        t = get_logit_scale(outputs)
        b = outputs.get("logit_bias")
        if b is None:
            raise AudioclError(
                "the siglip loss needs a logit bias: build the model with a bias (init -10)"
            )
        ya = D.gather_with_grad(y)
        if self.local_loss and D.is_distributed():
            offset, _ = D.local_offset(x.shape[0], x.device)
            return siglip_loss_local(x, ya, t, b, offset)
        return siglip_loss(D.gather_with_grad(x), ya, t, b)
