"""Weighted sum of losses, e.g. contrastive + alignment/uniformity regularisers.

``L = sum_k w_k L_k(outputs, batch)``. The last values of the terms are kept
(detached) in ``last_terms`` for logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from audiocl.errors import AudioclError


class CombinedLoss(nn.Module):
    """``sum_k weight_k * loss_k``.

    Build from modules (``CombinedLoss([(1.0, ClipLoss()), (0.1, AlignUniformLoss())])``)
    or by name through ``build_loss("combined", terms=[{"name": "clip", "weight": 1.0,
    ...options}, ...])``.
    """

    def __init__(self, terms: Sequence[Any]):
        super().__init__()
        from audiocl.losses import build_loss

        if not terms:
            raise AudioclError("combined loss needs at least one term")
        modules, weights, names = [], [], []
        for k, term in enumerate(terms):
            if isinstance(term, Mapping):
                opts = dict(term)
                if "name" not in opts:
                    raise AudioclError(f"combined loss term {k} has no 'name'")
                name = opts.pop("name")
                weight = float(opts.pop("weight", 1.0))
                module = build_loss(name, **opts)
            else:
                weight, module = term
                name = type(module).__name__
            modules.append(module)
            weights.append(float(weight))
            names.append(f"{k}_{name}")
        self.losses = nn.ModuleList(modules)
        self.weights = weights
        self.names = names
        self.last_terms: dict[str, float] = {}

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        total = None
        for name, w, loss in zip(self.names, self.weights, self.losses):
            v = loss(outputs, batch)
            self.last_terms[name] = float(v.detach())
            total = w * v if total is None else total + w * v
        return total
