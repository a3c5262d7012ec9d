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
    """``L = sum_k weight_k * L_k(outputs, batch)``, a scalar ``Tensor[]``.

    Build from modules (``CombinedLoss([(1.0, ClipLoss()), (0.1, AlignUniformLoss())])``),
    from named modules (``CombinedLoss([("clip", 1.0, ClipLoss())])``, as the trainer
    does for ``loss.terms``) or by name through ``build_loss("combined", terms=[{"name":
    "clip", "weight": 1.0, ...options}, ...])``. ``last_terms`` maps each term's name
    (``<k>_<name>`` when a name repeats) to its last value, so a non-finite loss can be
    blamed on the term that produced it.
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
                name = str(opts.pop("name"))
                weight = float(opts.pop("weight", 1.0))
                module = build_loss(name, **opts)
            elif len(term) == 3:
                name, weight, module = term
            else:
                weight, module = term
                name = type(module).__name__
            modules.append(module)
            weights.append(float(weight))
            names.append(name)
        self.losses = nn.ModuleList(modules)
        self.weights = weights
        self.names = [f"{k}_{n}" if names.count(n) > 1 else n for k, n in enumerate(names)]
        self.last_terms: dict[str, float] = {}

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        total: Tensor | None = None
        self.last_terms = {}
        for name, w, loss in zip(self.names, self.weights, self.losses):
            v = loss(outputs, batch)
            self.last_terms[name] = float(v.detach())
            total = w * v if total is None else total + w * v
        assert total is not None  # at least one term (checked in __init__)
        return total
