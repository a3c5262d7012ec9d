"""Hard-negative InfoNCE (CompA-style composition-aware negatives).

Each clip i comes with a block of captions ``[positive, neg_1 .. neg_K]``:
``x`` [N, d] audio, ``y`` [N, 1+K, d] captions (block index 0 is the positive),
``valid`` [N, 1+K] bool (padding of clips with fewer than K negatives is False;
the positive must be valid). Flatten the captions to [N (1+K), d]; logits
``l = t * x y_flat^T`` [N, N (1+K)].

* audio -> text: row i sees every clip's positive caption and its **own** valid
  hard negatives (with ``share_negatives=True``, every clip's valid hard
  negatives); everything else is set to -inf, so it drops out of the softmax
  exactly. Target: column ``i (1+K)``.
* text -> audio: the positive captions [N, d] against all clips, as CLIP (a
  hard negative has no clip of its own).

``L = (CE_{a->t} + CE_{t->a}) / 2``, each the mean over rows. With K = 0 this
is the CLIP loss. (Masking by multiplying logits with a large negative number
instead turns negative logits into huge positive ones.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import as_scale, get_embeddings, get_logit_scale, two_modalities


def hardneg_loss(
    x: Tensor,
    y: Tensor,
    logit_scale: Tensor | float,
    valid: Tensor | None = None,
    *,
    share_negatives: bool = False,
) -> Tensor:
    """Hard-negative InfoNCE for audio ``x`` [N, d] and caption blocks ``y`` [N, 1+K, d]; 0-d."""
    if y.dim() != 3 or y.shape[0] != x.shape[0] or y.shape[2] != x.shape[1]:
        raise AudioclError(f"hardneg: captions must be [N, 1+K, d] for audio {tuple(x.shape)}, got {tuple(y.shape)}")
    n, b = y.shape[0], y.shape[1]
    if valid is None:
        valid = torch.ones(n, b, dtype=torch.bool, device=x.device)
    valid = valid.to(torch.bool)
    if not bool(valid[:, 0].all()):
        raise AudioclError("hardneg: every clip's positive caption (block index 0) must be valid")
    t = as_scale(logit_scale, x)
    logits = t * (x @ y.reshape(n * b, -1).T)  # [N, N*B]
    owner = torch.arange(n, device=x.device).repeat_interleave(b)  # clip of each caption
    slot = torch.arange(b, device=x.device).repeat(n)  # position inside its block
    rows = torch.arange(n, device=x.device)[:, None]
    allowed = (slot == 0)[None, :] | (valid.reshape(-1)[None, :] & (owner[None, :] == rows))
    if share_negatives:
        allowed = allowed | valid.reshape(-1)[None, :]
    logits = logits.masked_fill(~allowed, float("-inf"))
    target = torch.arange(n, device=x.device) * b
    l_at = F.cross_entropy(logits, target)
    l_ta = F.cross_entropy(t * (y[:, 0] @ x.T), torch.arange(n, device=x.device))
    return 0.5 * (l_at + l_ta)


class HardNegativeLoss(nn.Module):
    """Hard-negative InfoNCE on the model's outputs.

    ``outputs["embeddings"][text]`` is [N (1+K), d], the captions laid out in
    per-clip blocks (positive first). ``batch["hard_negative_mask"]`` [N, 1+K]
    (optional) marks valid captions. Gathered over ranks with gradient.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("audio", "text"),
        num_negatives: int = 1,
        share_negatives: bool = False,
    ):
        super().__init__()
        two_modalities(modalities, "hardneg")
        if num_negatives < 0:
            raise AudioclError("hardneg num_negatives must be >= 0")
        self.modalities = tuple(modalities)
        self.block = 1 + num_negatives
        self.share_negatives = share_negatives

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        x, y = get_embeddings(outputs, self.modalities, same_shape=False)
        if y.shape[0] != x.shape[0] * self.block:
            raise AudioclError(
                f"hardneg: expected {x.shape[0]} x {self.block} captions, got {y.shape[0]}"
            )
        valid = None if batch is None else batch.get("hard_negative_mask")
        if valid is None:
            valid = torch.ones(x.shape[0], self.block, dtype=torch.bool, device=x.device)
        valid = torch.as_tensor(valid, device=x.device).to(torch.bool)
        xa = D.gather_with_grad(x)
        ya = D.gather_with_grad(y.reshape(x.shape[0], self.block, -1))
        va = D.gather_with_grad(valid.to(torch.uint8)).to(torch.bool)
        return hardneg_loss(xa, ya, get_logit_scale(outputs), va, share_negatives=self.share_negatives)
