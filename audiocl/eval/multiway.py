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

The score that matches a training objective is :func:`score_for_loss`
(``symile`` -> ``mip``, ``gram`` -> ``volume``, every pairwise loss ->
``cosine``); recipes and the CLI (``--loss``) take it from here. The score
rule itself, for any candidate set (the N items here, or all possible values
of a variable), is :func:`candidate_scores`.

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

# the test-time score of each multi-way objective; a loss not named here
# compares two modalities at a time, so its score is (summed) cosine
SCORE_FOR_LOSS = {"symile": "mip", "gram": "volume"}

__all__ = [
    "METHODS",
    "SCORE_FOR_LOSS",
    "score_for_loss",
    "candidate_scores",
    "multiway_scores",
    "multiway_metrics",
    "multiway_all",
    "multiway",
]


def score_for_loss(loss: str) -> str:
    """The multi-way score (``mip``, ``volume`` or ``cosine``) that matches training loss ``loss``."""
    from audiocl.losses import LOSSES

    if loss not in LOSSES:
        raise AudioclError(f"unknown loss '{loss}'; known: {', '.join(sorted(LOSSES))}")
    return SCORE_FOR_LOSS.get(loss, "cosine")


def candidate_scores(method: str, given: Sequence[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """Scores ``[Q, C]`` of query tuples ``given`` (each ``[Q, d]``) against ``candidates`` ``[C, d]``.

    ``mip``: ``sum_d c[d] prod_m g_m[d]``; ``cosine``: ``sum_m cos(g_m, c)``;
    ``volume``: ``-V(c, g_1, g_2, ...)`` of the unit-normalised vectors.
    Higher is better for all three.
    """
    from audiocl.losses.similarity import cosine, mip, neg_volume

    if not given:
        raise AudioclError("multi-way scores need at least one query modality")
    cand = candidates.float()
    given = [g.float() for g in given]
    if method == "mip":
        return mip(given, cand)
    if method == "cosine":
        return sum(cosine(g, cand) for g in given)  # type: ignore[return-value]
    if method == "volume":
        # the volume is symmetric in its vectors: anchor = candidates,
        # tuple = the query's other modalities; transpose to [Q, C]
        return neg_volume(F.normalize(cand, dim=-1), [F.normalize(g, dim=-1) for g in given]).T
    raise AudioclError(f"unknown multi-way method {method!r}; choose one of {', '.join(METHODS)}")


def multiway_scores(
    embeddings: dict[str, torch.Tensor], target: str, method: str, rows: slice | None = None
) -> torch.Tensor:
    """Scores ``[Q, N]`` of the queries ``rows`` (default all) against every target row."""
    if target not in embeddings:
        raise AudioclError(f"target modality {target!r} not among {list(embeddings)}")
    others = [m for m in embeddings if m != target]
    if not others:
        raise AudioclError("multi-way retrieval needs at least one modality besides the target")
    rows = rows or slice(None)
    cand = M.as_tensor(embeddings[target]).float()
    given = [M.as_tensor(embeddings[m]).float()[rows] for m in others]
    return candidate_scores(method, given, cand)


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


def multiway(
    model: Any | None = None,
    items: Sequence[Any] | None = None,
    *,
    arrays: dict[str, Any] | None = None,
    embeddings: dict[str, torch.Tensor] | None = None,
    method: str | None = None,
    loss: str | None = None,
    targets: Sequence[str] | None = None,
    towers: Sequence[str] | None = None,
    inputs: dict[str, str] | None = None,
    store: Any | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Multi-way retrieval from loaded objects: a model with manifest ``items`` or paired
    ``arrays`` (``{name: array [N, ...]}``), or precomputed ``embeddings`` ``{name: [N, d]}``.

    The score is ``method``, or :func:`score_for_loss` of ``loss`` (give one
    or neither; default ``mip``). Returns :func:`multiway_all`'s dict.
    """
    if method is not None and loss is not None:
        raise AudioclError("give a multi-way method or a loss, not both")
    method = score_for_loss(loss) if loss is not None else (method or "mip")
    if batch_size < 1:
        raise AudioclError(f"batch size must be >= 1, got {batch_size}")
    given = sum(x is not None for x in (items, arrays, embeddings))
    if given != 1 or (embeddings is None) == (model is None):
        raise AudioclError("give a model with items or arrays, or embeddings without a model")
    if embeddings is None:
        from audiocl.eval.embed import embed_arrays, embed_items_all_towers

        if items is not None:
            embeddings = embed_items_all_towers(model, list(items), store=store, towers=towers, batch_size=batch_size)
        else:
            embeddings = embed_arrays(model, dict(arrays or {}), towers=towers, inputs=inputs)
    elif towers:
        missing = [t for t in towers if t not in embeddings]
        if missing:
            raise AudioclError(f"no embeddings named {missing[0]!r}; have {list(embeddings)}")
        embeddings = {t: embeddings[t] for t in towers}
    return multiway_all(embeddings, method, targets)
