"""Contrastive objectives, one small module a family, all on the model's output dict.

Every loss is an ``nn.Module`` with ``forward(outputs, batch=None) -> Tensor[]``
where ``outputs = {"embeddings": {name: [N, d]}, "logit_scale": [], "logit_bias": [] | None}``,
plus a functional form on plain tensors. Build by name with :func:`build_loss`.
Embeddings are gathered across ranks with gradient (``distributed.py``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from audiocl.errors import AudioclError
from audiocl.losses.alignment import AlignUniformLoss, alignment_loss, uniformity_loss
from audiocl.losses.clip import ClipLoss, clip_loss
from audiocl.losses.combined import CombinedLoss
from audiocl.losses.cwcl import CwclLoss, cwcl_loss
from audiocl.losses.dcl import DclLoss, dcl_loss
from audiocl.losses.distill import DistillLoss, embedding_distill_loss, similarity_distill_loss
from audiocl.losses.gram import GramLoss, gram_loss, gram_volume
from audiocl.losses.hardneg import HardNegativeLoss, hardneg_loss
from audiocl.losses.multipositive import MultiPositiveLoss, multipositive_loss
from audiocl.losses.mvinfonce import MvInfoNceLoss, mv_infonce_loss
from audiocl.losses.pairwise import PairwiseLoss
from audiocl.losses.siglip import SigLipLoss, siglip_loss
from audiocl.losses.symile import SymileLoss, symile_loss

LOSSES: dict[str, type[nn.Module]] = {
    "clip": ClipLoss,
    "infonce": ClipLoss,
    "siglip": SigLipLoss,
    "symile": SymileLoss,
    "gram": GramLoss,
    "dcl": DclLoss,
    "cwcl": CwclLoss,
    "multipositive": MultiPositiveLoss,
    "hardneg": HardNegativeLoss,
    "align_uniform": AlignUniformLoss,
    "distill": DistillLoss,
    "pairwise": PairwiseLoss,
    "mvinfonce": MvInfoNceLoss,
    "combined": CombinedLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered under ``name`` with keyword options.

    ``combined`` takes ``terms=[{"name": ..., "weight": ..., **options}, ...]``.
    Unknown names or options raise :class:`AudioclError`.
    """
    if name not in LOSSES:
        raise AudioclError(f"unknown loss '{name}'; known: {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as e:
        raise AudioclError(f"bad options for loss '{name}': {e}") from None


__all__ = [
    "LOSSES",
    "build_loss",
    "AlignUniformLoss",
    "ClipLoss",
    "CombinedLoss",
    "CwclLoss",
    "DclLoss",
    "DistillLoss",
    "GramLoss",
    "HardNegativeLoss",
    "MultiPositiveLoss",
    "MvInfoNceLoss",
    "PairwiseLoss",
    "SigLipLoss",
    "SymileLoss",
    "alignment_loss",
    "clip_loss",
    "cwcl_loss",
    "dcl_loss",
    "embedding_distill_loss",
    "gram_loss",
    "gram_volume",
    "hardneg_loss",
    "multipositive_loss",
    "mv_infonce_loss",
    "siglip_loss",
    "similarity_distill_loss",
    "symile_loss",
    "uniformity_loss",
]
