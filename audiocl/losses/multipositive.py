"""Multi-positive InfoNCE: several captions (or clips) per item.

``x`` [N_a, d] (e.g. audio), ``y`` [N_t, d] (e.g. captions), a boolean positives
mask ``P`` [N_a, N_t] (``P_ij`` true when caption j describes clip i), logits
``l = t * x y^T`` [N_a, N_t]. Every row and every column needs a positive.

``mode="out"`` (default; the average of log-likelihoods, SupCon's L_out)::

    L_{x->y} = mean_i  -(1/|P_i.|) sum_{j in P_i.} log softmax_j(l_i.)
    L_{y->x} = mean_j  -(1/|P_.j|) sum_{i in P_.j} log softmax_i(l_.j)

``mode="in"`` (the likelihood of the set: log of summed probabilities)::

    L_{x->y} = mean_i  -log sum_{j in P_i.} softmax_j(l_i.)
             = mean_i  [ logsumexp_j l_ij - logsumexp_{j in P_i.} l_ij ]

``L = (L_{x->y} + L_{y->x}) / 2``. With one caption per clip (P = I) both modes
equal the CLIP loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import as_scale, get_embeddings, get_logit_scale, two_modalities


def _rows(logits: Tensor, pos: Tensor, mode: str) -> Tensor:
    if mode == "out":
        logp = torch.log_softmax(logits, dim=1)
        return -((logp * pos).sum(1) / pos.sum(1)).mean()
    lse_all = torch.logsumexp(logits, dim=1)
    lse_pos = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
    return (lse_all - lse_pos).mean()


def multipositive_loss(
    x: Tensor, y: Tensor, positives: Tensor, logit_scale: Tensor | float, mode: str = "out"
) -> Tensor:
    """Multi-positive symmetric InfoNCE; ``positives`` bool [N_a, N_t]; returns 0-d."""
    if mode not in ("out", "in"):
        raise AudioclError(f"multipositive mode must be 'out' or 'in', got {mode!r}")
    pos = positives.to(torch.bool)
    if pos.shape != (x.shape[0], y.shape[0]):
        raise AudioclError(
            f"positives mask {tuple(pos.shape)} must be [{x.shape[0]}, {y.shape[0]}]"
        )
    if not bool(pos.any(1).all()) or not bool(pos.any(0).all()):
        raise AudioclError("multipositive: every clip and every caption needs a positive")
    logits = as_scale(logit_scale, x) * (x @ y.T)
    return 0.5 * (_rows(logits, pos, mode) + _rows(logits.T, pos.T, mode))


def owner_to_mask(owner: Tensor, n_items: int) -> Tensor:
    """Positives mask [n_items, N_t] from ``owner`` [N_t] (the row index each caption belongs to)."""
    return torch.arange(n_items, device=owner.device)[:, None] == owner[None, :]


class MultiPositiveLoss(nn.Module):
    """Multi-positive InfoNCE between ``modalities = (items, captions)``.

    The batch gives ``batch["text_owner"]``: LongTensor [N_t], for each caption
    the (local) row of the item it describes. Over ranks, owners are shifted by
    each rank's offset before gathering, so the mask is the global one.
    Or it gives the mask itself, ``batch["text_positives"]`` bool [N_a, N_t]
    (``data.caption_sampling: all``: a caption string several items share is a
    positive of each); single process only.
    """

    def __init__(self, modalities: Sequence[str] = ("audio", "text"), mode: str = "out"):
        super().__init__()
        two_modalities(modalities, "multipositive")
        if mode not in ("out", "in"):
            raise AudioclError(f"multipositive mode must be 'out' or 'in', got {mode!r}")
        self.modalities = tuple(modalities)
        self.mode = mode

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = get_embeddings(outputs, self.modalities, same_shape=False)
        if batch is not None and "text_positives" in batch:
            if D.is_distributed():
                raise AudioclError("multipositive: batch['text_positives'] is single-process; give text_owner")
            pos = torch.as_tensor(batch["text_positives"], device=x.device)
            return multipositive_loss(x, y, pos, get_logit_scale(outputs), self.mode)
        if batch is None or "text_owner" not in batch:
            raise AudioclError("the multipositive loss needs batch['text_owner'] (caption -> item row)")
        owner = torch.as_tensor(batch["text_owner"], device=x.device, dtype=torch.long)
        offset, _ = D.local_offset(x.shape[0], x.device)
        xa, ya = D.gather_with_grad(x), D.gather_with_grad(y)
        owner_all = D.gather_with_grad(owner + offset)
        return multipositive_loss(
            xa, ya, owner_to_mask(owner_all, xa.shape[0]), get_logit_scale(outputs), self.mode
        )

