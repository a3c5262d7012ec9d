"""Pure ranking and classification metrics on similarity matrices and labels.

Conventions used throughout ``audiocl.eval``:

* A similarity matrix ``sim`` has shape ``[Q, G]``: one row per query, one
  column per gallery item; larger means more similar.
* Ranks are **1-based**: rank 1 is the top of the list.
* **Ties are broken pessimistically**: the rank of a positive item with score
  ``s`` is 1 + the number of *non-positive* gallery items whose score is
  ``>= s`` + the number of the query's other positives ranked before it.
  A distractor with the same score as the positive therefore counts above
  it. Among the query's own positives (several captions of one clip) ties
  are broken by their order in the positives list, so tied positives take
  ranks ``r, r+1, ...``: the best positive gets the rank it would get alone,
  and the multiset of ranks does not depend on that order. This makes every
  metric that uses the best rank or the sorted ranks independent of the
  order of the gallery, and a degenerate model that gives every item the
  same score gets the worst rank, not the best. (LAION-CLAP uses ``torch.argsort``, whose order among ties is
  unspecified; with real-valued embeddings ties almost never occur, so the
  two agree in practice.)
* Non-finite scores are refused with :class:`audiocl.errors.AudioclError`:
  a NaN would otherwise silently produce arbitrary ranks.

Everything here is a pure function of tensors/arrays; protocol glue (which
query has which positives) lives in :mod:`audiocl.eval.retrieval` and
:mod:`audiocl.eval.zeroshot`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from audiocl.errors import AudioclError

__all__ = [
    "as_tensor",
    "check_finite",
    "ranks_from_similarity",
    "positives_at_least",
    "positives_before",
    "recall_at_k",
    "hits_at_1",
    "mrr",
    "median_rank",
    "mean_rank",
    "map_at_k_single",
    "map_at_k_multi",
    "topk_accuracy",
    "per_class_accuracy",
    "confusion_matrix",
    "average_precision",
    "mean_average_precision",
]


def as_tensor(x: torch.Tensor | np.ndarray | Sequence, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convert ``x`` to a CPU tensor (no copy when already one), optionally cast."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if dtype is not None:
        t = t.to(dtype)
    return t


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise ``AudioclError`` when ``x`` holds NaN or +-inf (never a silent NaN)."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise AudioclError(f"{what} holds {bad} non-finite value(s) (NaN or inf); cannot rank")


def ranks_from_similarity(sim: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based pessimistic ranks of the positives of each query.

    Shapes: ``sim`` ``[Q, G]``; ``positives`` either ``LongTensor[Q]`` (one
    positive gallery index per query) or ``LongTensor[Q, P]`` padded with
    ``-1`` (several positives per query, e.g. the 5 captions of a clip).

    Formula, with ``s_p = sim[q, positives[q, p]]`` and ``Pos_q`` the set of
    ``q``'s positives::

        rank[q, p] = 1 + #{ g not in Pos_q : sim[q, g] >= s_p }
                       + #{ p' != p : s_p' > s_p  or (s_p' == s_p and p' < p) }

    Each positive is ranked against the whole gallery, other positives
    included (LAION-CLAP's audio-to-text convention); with one positive this
    is ``#{ g : sim[q, g] >= s_p }``.

    Returns ``LongTensor`` of the same shape as ``positives``; padded entries
    (``-1``) get rank ``0``.
    """
    sim = as_tensor(sim)
    pos = as_tensor(positives, torch.long)
    check_finite(sim, "similarity matrix")
    squeeze = pos.dim() == 1
    if squeeze:
        pos = pos[:, None]
    if pos.shape[0] != sim.shape[0]:
        raise AudioclError(f"positives has {pos.shape[0]} rows but the similarity matrix has {sim.shape[0]}")
    if bool((pos >= sim.shape[1]).any()):
        raise AudioclError(f"a positive index is >= the gallery size {sim.shape[1]}")
    valid = pos >= 0
    pos_scores = torch.gather(sim, 1, pos.clamp(min=0))  # [Q, P]
    # count per positive slot to keep memory at one [Q, G] bool at a time
    at_least = torch.stack(
        [(sim >= pos_scores[:, p : p + 1]).sum(dim=1) for p in range(pos.shape[1])], dim=1
    )
    ranks = at_least - positives_at_least(pos_scores, valid) + 1 + positives_before(pos_scores, valid)
    ranks = torch.where(valid, ranks, torch.zeros_like(ranks))
    return ranks[:, 0] if squeeze else ranks


def positives_at_least(pos_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``out[q, p] = #{ valid p' (itself included) : s_p' >= s_p }``; shapes ``[Q, P]``."""
    ge = pos_scores[:, None, :] >= pos_scores[:, :, None]  # [Q, p, p']
    return (ge & valid[:, None, :]).sum(dim=2)


def positives_before(pos_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``out[q, p] = #{ valid p' != p : s_p' > s_p or (s_p' == s_p and p' < p) }``; ``[Q, P]``."""
    n = pos_scores.shape[1]
    a = pos_scores[:, :, None]  # s_p
    b = pos_scores[:, None, :]  # s_p'
    earlier = torch.arange(n)[None, :] < torch.arange(n)[:, None]  # [p, p']: p' < p
    before = (b > a) | ((b == a) & earlier[None])
    return (before & valid[:, None, :]).sum(dim=2)


def _valid_ranks(ranks: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    r = as_tensor(ranks, torch.float64).reshape(-1)
    if r.numel() == 0:
        raise AudioclError("no ranks to average (empty evaluation set)")
    if bool((r < 1).any()):
        raise AudioclError("ranks are 1-based; got a rank < 1")
    return r


def recall_at_k(ranks: torch.Tensor | np.ndarray | Sequence, k: int) -> float:
    """R@k = mean over queries of ``[rank <= k]``. ``ranks``: ``[N]``, 1-based."""
    r = _valid_ranks(ranks)
    return float((r <= k).double().mean())


def hits_at_1(ranks: torch.Tensor | np.ndarray | Sequence) -> float:
    """HITS@1 (CLASP's name) = R@1 = fraction of queries whose positive is ranked first."""
    return recall_at_k(ranks, 1)


def mrr(ranks: torch.Tensor | np.ndarray | Sequence) -> float:
    """Mean reciprocal rank = mean over queries of ``1 / rank``. ``ranks``: ``[N]``, 1-based."""
    r = _valid_ranks(ranks)
    return float((1.0 / r).mean())


def median_rank(ranks: torch.Tensor | np.ndarray | Sequence) -> float:
    """Median rank as LAION-CLAP reports it: ``floor(median(rank))`` of 1-based ranks.

    LAION computes ``floor(median(rank0)) + 1`` on 0-based ranks, which is the
    same number; for an even count the median of the two middle values is
    floored (ranks 2 and 3 give 2).
    """
    r = _valid_ranks(ranks).numpy()
    return float(math.floor(float(np.median(r))))


def mean_rank(ranks: torch.Tensor | np.ndarray | Sequence) -> float:
    """Mean rank (CLASP's meanR) = mean over queries of the 1-based rank."""
    return float(_valid_ranks(ranks).mean())


def map_at_k_single(ranks: torch.Tensor | np.ndarray | Sequence, k: int = 10) -> float:
    """mAP@k with one relevant item per query (LAION text-to-audio).

    ``mAP@k = mean_q ( 1/rank_q if rank_q <= k else 0 )``, ``ranks``: ``[N]``
    1-based. LAION's code tests ``rank0 < 10`` on 0-based ranks, i.e.
    ``rank <= 10`` here.
    """
    r = _valid_ranks(ranks)
    return float(torch.where(r <= k, 1.0 / r, torch.zeros_like(r)).mean())


def map_at_k_multi(
    ranks: torch.Tensor | np.ndarray,
    k: int = 10,
    *,
    n_relevant: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    sort_ranks: bool = True,
) -> float:
    """mAP@k with several relevant items per query (LAION audio-to-text).

    ``ranks``: ``[Q, P]`` 1-based ranks of each query's relevant items, padded
    with ``0``. For query ``q`` let ``r_(1) <= r_(2) <= ...`` be its relevant
    ranks that are ``<= k`` (sorted); then

        ``AP@k(q) = (1 / n_q) * sum_i  i / r_(i)``

    with ``n_q`` = number of relevant items of ``q`` (``n_relevant[q]``,
    default: its non-padded count; 5 for Clotho/AudioCaps, as LAION divides
    by 5). ``mAP@k`` is the mean over queries. ``i / r_(i)`` is the precision
    at the i-th relevant hit, so this is the usual AP truncated at ``k``.

    ``sort_ranks=False`` reproduces LAION-CLAP's code as written
    (``evaluate_clotho_audiocaps``): it keeps the ranks in caption order
    instead of sorting them, so ``i`` is the caption's position among the
    captions under the cut-off rather than its hit order; this can exceed 1
    per query when later captions rank higher. Their docstring (and the
    XinhaoMei reference they adapt) sorts, which is the default here.
    """
    r = as_tensor(ranks, torch.float64)
    if r.dim() != 2:
        raise AudioclError(f"map_at_k_multi wants ranks of shape [Q, P], got {tuple(r.shape)}")
    if r.shape[0] == 0:
        raise AudioclError("no ranks to average (empty evaluation set)")
    valid = r > 0
    n = valid.sum(dim=1).double() if n_relevant is None else as_tensor(n_relevant, torch.float64).reshape(-1)
    if n.numel() != r.shape[0]:
        raise AudioclError(f"n_relevant has {n.numel()} entries for {r.shape[0]} queries")
    if bool((n <= 0).any()):
        raise AudioclError("a query has no relevant item; mAP is undefined for it")
    if sort_ranks:
        # padding sorts last; hits (rank <= k) then form a prefix of each row
        r = torch.sort(torch.where(valid, r, torch.full_like(r, torch.inf)), dim=1).values
        valid = torch.isfinite(r)
    hit = valid & (r <= k)
    i = torch.cumsum(hit.double(), dim=1)  # position of each hit among the row's hits
    per_query = torch.where(hit, i / r, torch.zeros_like(r)).sum(dim=1) / n
    return float(per_query.mean())


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy: fraction of items whose true class has rank ``<= k``.

    ``logits``: ``[N, C]`` scores; ``targets``: ``LongTensor[N]`` class indices.
    Ranks use the pessimistic tie rule of :func:`ranks_from_similarity`, so a
    model that scores all classes equally gets top-1 = 0 (for ``C > 1``).
    """
    ranks = ranks_from_similarity(logits, as_tensor(targets, torch.long))
    return recall_at_k(ranks, k)


def per_class_accuracy(
    pred: torch.Tensor | np.ndarray | Sequence[int],
    targets: torch.Tensor | np.ndarray | Sequence[int],
    n_classes: int,
) -> list[float | None]:
    """Accuracy within each true class: ``acc[c] = #{pred==c & target==c} / #{target==c}``.

    ``pred``, ``targets``: ``[N]`` class indices. Returns a list of length
    ``n_classes``; a class with no item gets ``None`` (undefined, not 0).
    """
    p = as_tensor(pred, torch.long).reshape(-1)
    t = as_tensor(targets, torch.long).reshape(-1)
    out: list[float | None] = []
    for c in range(n_classes):
        m = t == c
        n = int(m.sum())
        out.append(None if n == 0 else float((p[m] == c).double().mean()))
    return out


def confusion_matrix(
    pred: torch.Tensor | np.ndarray | Sequence[int],
    targets: torch.Tensor | np.ndarray | Sequence[int],
    n_classes: int,
) -> torch.Tensor:
    """Counts ``M[t, p]`` = number of items of true class ``t`` predicted as ``p``.

    ``pred``, ``targets``: ``[N]``; returns ``LongTensor[n_classes, n_classes]``
    (rows: true class, columns: predicted class).
    """
    p = as_tensor(pred, torch.long).reshape(-1)
    t = as_tensor(targets, torch.long).reshape(-1)
    if p.numel() != t.numel():
        raise AudioclError(f"{p.numel()} predictions for {t.numel()} targets")
    if p.numel() and (int(p.max()) >= n_classes or int(t.max()) >= n_classes or int(p.min()) < 0 or int(t.min()) < 0):
        raise AudioclError(f"class index outside [0, {n_classes})")
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def average_precision(scores: torch.Tensor | np.ndarray, relevant: torch.Tensor | np.ndarray) -> float:
    """Average precision of one ranking (one class of a multi-label task).

    ``scores``: ``[N]``; ``relevant``: ``[N]`` bool. With the pessimistic tie
    rule, for each relevant item ``i`` with score ``s_i``:
    ``precision_i = #{relevant j : s_j >= s_i} / #{j : s_j >= s_i}`` and
    ``AP = mean over relevant i of precision_i``. This equals the step-wise
    ``sum_n (R_n - R_{n-1}) P_n`` over score thresholds (scikit-learn's
    ``average_precision_score``), ties included. One sort: ``O(N log N)``
    time, ``O(N)`` memory. Raises when nothing is relevant.
    """
    s = as_tensor(scores, torch.float64).reshape(-1)
    rel = as_tensor(relevant).reshape(-1).bool()
    check_finite(s, "scores")
    n_pos = int(rel.sum())
    if n_pos == 0:
        raise AudioclError("average precision is undefined without a relevant item")
    # sort once; a tie group's members all get the precision at the group's end
    order = torch.argsort(s, descending=True)
    s_sorted, rel_sorted = s[order], rel[order].double()
    _, counts = torch.unique_consecutive(s_sorted, return_counts=True)
    ends = torch.cumsum(counts, dim=0) - 1  # index of each group's last item
    cum_pos = torch.cumsum(rel_sorted, dim=0)[ends]
    group_pos = torch.diff(cum_pos, prepend=torch.zeros(1, dtype=torch.float64))
    precision = cum_pos / (ends + 1).double()
    return float((group_pos * precision).sum() / n_pos)


def mean_average_precision(
    scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray
) -> tuple[float, list[float | None]]:
    """Multi-label mAP: mean over classes (that have a positive) of per-class AP.

    ``scores``: ``[N, C]``; ``targets``: ``[N, C]`` 0/1. Returns
    ``(mAP, per_class_ap)`` where ``per_class_ap[c]`` is ``None`` for a class
    with no positive item (excluded from the mean, as AudioSet/FSD50K evals do).
    """
    s = as_tensor(scores, torch.float64)
    y = as_tensor(targets).bool()
    if s.shape != y.shape or s.dim() != 2:
        raise AudioclError(f"scores {tuple(s.shape)} and targets {tuple(y.shape)} must both be [N, C]")
    per: list[float | None] = []
    for c in range(s.shape[1]):
        per.append(average_precision(s[:, c], y[:, c]) if bool(y[:, c].any()) else None)
    present = [a for a in per if a is not None]
    if not present:
        raise AudioclError("no class has a positive item; mAP is undefined")
    return float(np.mean(present)), per
