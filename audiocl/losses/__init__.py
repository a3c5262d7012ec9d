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
from audiocl.losses.clip import ClipLoss, clip_loss
from audiocl.losses.gram import GramLoss, gram_loss, gram_volume
from audiocl.losses.siglip import SigLipLoss, siglip_loss
from audiocl.losses.symile import SymileLoss, symile_loss

LOSSES: dict[str, type[nn.Module]] = {
    "clip": ClipLoss,
    "infonce": ClipLoss,
    "siglip": SigLipLoss,
    "symile": SymileLoss,
    "gram": GramLoss,
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
    "ClipLoss",
    "SigLipLoss",
    "SymileLoss",
    "GramLoss",
    "clip_loss",
    "siglip_loss",
    "symile_loss",
    "gram_loss",
    "gram_volume",
]
