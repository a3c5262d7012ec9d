"""Multi-way retrieval: predict one modality from the others (3+ modalities).

Given paired embeddings ``{m: [N, d]}`` (row ``i`` of every modality is item
``i``) and a target modality ``t``, each item's *query* is the tuple of its
other modalities and the *candidates* are the target rows of all items. The
correct candidate of query ``i`` is target row ``i``. Scores (higher =
better), from :mod:`audiocl.losses.similarity`, which mirrors the training
objectives:

* ``mip`` (Symile): ``s[i, j] = sum_d t_j[d] * prod_{m != t} x_m,i[d]``;
* ``volume`` (GRAM): ``s[i, j] = -V(t_j, x_m1,i, x_m2,i, ...)``, the negated
  volume of the parallelotope spanned by the vectors (``sqrt |det Gram|``);
* ``cosine`` (pairwise models): ``s[i, j] = sum_{m != t} cos(x_m,i, t_j)``.

Metrics: ``accuracy`` (= R@1), R@1/5/10, MRR and mean rank over the ``N``
queries, ranks 1-based with pessimistic ties (:mod:`audiocl.eval.metrics`).
A random model gets ``R@k ~ k / N``. Queries are scored in chunks of
``chunk`` rows, so memory is ``O(chunk * N)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M

METHODS = ("mip", "volume", "cosine")

__all__ = ["METHODS", "multiway_scores", "multiway_metrics", "multiway_all"]


def multiway_scores(
    embeddings: dict[str, torch.Tensor], target: str, method: str, rows: slice | None = None
) -> torch.Tensor:
    """Scores ``[Q, N]`` of the queries ``rows`` (default all) against every target row."""
    from audiocl.losses.similarity import cosine, mip, neg_volume

    if target not in embeddings:
        raise AudioclError(f"target modality {target!r} not among {list(embeddings)}")
    others = [m for m in embeddings if m != target]
    if not others:
        raise AudioclError("multi-way retrieval needs at least one modality besides the target")
    rows = rows or slice(None)
    cand = M.as_tensor(embeddings[target]).float()
    given = [M.as_tensor(embeddings[m]).float()[rows] for m in others]
    if method == "mip":
        return mip(given, cand)
    if method == "cosine":
        return sum(cosine(g, cand) for g in given)  # type: ignore[return-value]
    if method == "volume":
        # the volume is symmetric in its vectors: anchor = target candidates,
        # tuple = the query's other modalities; transpose to [Q, N]
        return neg_volume(F.normalize(cand, dim=-1), [F.normalize(g, dim=-1) for g in given]).T
    raise AudioclError(f"unknown multi-way method {method!r}; choose one of {', '.join(METHODS)}")


def multiway_metrics(
    embeddings: dict[str, torch.Tensor], target: str, method: str = "mip", *, chunk: int = 1024
) -> dict[str, Any]:
    """``{"accuracy", "R@1", "R@5", "R@10", "MRR", "mean_rank", "n_items"}`` for one target."""
    names = list(embeddings)
    n = M.as_tensor(embeddings[names[0]]).shape[0]
    for m in names:
        e = M.as_tensor(embeddings[m])
        if e.dim() != 2 or e.shape[0] != n:
            raise AudioclError(f"modality {m!r}: expected [{n}, d] paired rows, got {tuple(e.shape)}")
        M.check_finite(e.float(), f"{m} embeddings")
    if n == 0:
        raise AudioclError("no items")
    ranks = []
    for q0 in range(0, n, chunk):
        q1 = min(q0 + chunk, n)
        s = multiway_scores(embeddings, target, method, slice(q0, q1))
        ranks.append(M.ranks_from_similarity(s, torch.arange(q0, q1)))
    r = torch.cat(ranks)
    return {
        "accuracy": M.recall_at_k(r, 1),
        "R@1": M.recall_at_k(r, 1),
        "R@5": M.recall_at_k(r, 5),
        "R@10": M.recall_at_k(r, 10),
        "MRR": M.mrr(r),
        "mean_rank": M.mean_rank(r),
        "n_items": int(n),
    }


def multiway_all(
    embeddings: dict[str, torch.Tensor],
    method: str = "mip",
    targets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Multi-way results for each target modality (default: every modality)."""
    if len(embeddings) < 2:
        raise AudioclError("multi-way retrieval needs at least two modalities")
    if method not in METHODS:
        raise AudioclError(f"unknown multi-way method {method!r}; choose one of {', '.join(METHODS)}")
    tg = list(targets) if targets else list(embeddings)
    per = {t: multiway_metrics(embeddings, t, method) for t in tg}
    return {
        "eval": "multiway",
        "method": method,
        "modalities": list(embeddings),
        "targets": per,
        "n_items": next(iter(per.values()))["n_items"],
        "accuracy_mean": float(sum(v["accuracy"] for v in per.values()) / len(per)),
    }
