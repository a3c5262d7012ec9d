"""Pairwise sums of a two-modality loss for M >= 3 modalities.

For modalities ``x_1 .. x_M`` (each [N, d]) and a pairwise loss ``l(a, b)``
(any registered two-modality loss: clip, siglip, dcl, cwcl, ...)::

    pairs="all":     L = agg_{m < k} l(x_m, x_k)                 M (M-1) / 2 terms
    pairs="anchor":  L = agg_{m != a} l(x_a, x_m)                M - 1 terms

``agg`` is the sum (``reduction="sum"``, the usual "sum of CLIP losses") or the
mean (``reduction="mean"``). Each term is the registered loss module, so the
distributed gather and every option of the base loss apply unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.errors import AudioclError


class PairwiseLoss(nn.Module):
    """Sum (or mean) of ``base`` over all pairs of ``modalities`` or each with ``anchor``."""

    def __init__(
        self,
        modalities: Sequence[str],
        base: str = "clip",
        anchor: str | None = None,
        reduction: str = "sum",
        **base_kwargs: Any,
    ):
        super().__init__()
        from audiocl.losses import build_loss  # registry lives in the package

        mods = list(modalities)
        if len(mods) < 2:
            raise AudioclError("pairwise loss needs at least two modalities")
        if reduction not in ("sum", "mean"):
            raise AudioclError(f"pairwise reduction must be 'sum' or 'mean', got {reduction!r}")
        if anchor is None:
            pairs = list(combinations(mods, 2))
        else:
            if anchor not in mods:
                raise AudioclError(f"pairwise anchor '{anchor}' is not one of {mods}")
            pairs = [(anchor, m) for m in mods if m != anchor]
        self.pairs = pairs
        self.reduction = reduction
        self.terms = nn.ModuleList(build_loss(base, modalities=p, **base_kwargs) for p in pairs)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        vals = torch.stack([term(outputs, batch) for term in self.terms])
        return vals.sum() if self.reduction == "sum" else vals.mean()
