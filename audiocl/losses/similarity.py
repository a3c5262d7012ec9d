"""Test-time similarity functions matching the training objectives.

All return a score matrix where **higher means more similar**, so retrieval and
zero-shot code can rank them the same way:

* ``cosine(queries [Q, d], candidates [C, d]) -> [Q, C]``: <q, c> / (|q| |c|)
  (CLIP, SigLIP, DCL, CWCL, ... and pairwise multi-modal models).
* ``mip(query_reps: list of [Q, d], candidates [C, d]) -> [Q, C]``: Symile's
  multilinear inner product ``sum_d c[d] prod_m q_m[d]`` of each query tuple
  (row i of every query modality) with each candidate.
* ``neg_volume(anchor [Q, d], others: list of [C, d]) -> [Q, C]``: ``-V`` with V the
  GRAM volume of anchor row i and tuple j (smaller volume = better match).
  ``volume`` returns V itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from audiocl.errors import AudioclError
from audiocl.losses.gram import gram_volume


def cosine(queries: Tensor, candidates: Tensor) -> Tensor:
    """Cosine similarity [Q, C] of queries [Q, d] with candidates [C, d] (normalises both)."""
    return F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T


def mip(query_reps: Sequence[Tensor], candidates: Tensor) -> Tensor:
    """Multilinear inner product [Q, C]: ``(prod_m query_reps[m]) @ candidates^T``.

    ``query_reps``: one or more [Q, d] tensors (row i of each forms query i) or
    [d] vectors (a single query); ``candidates``: [C, d].
    """
    if not query_reps:
        raise AudioclError("mip needs at least one query modality")
    prod = query_reps[0]
    for q in query_reps[1:]:
        prod = prod * q
    if prod.dim() == 1:
        prod = prod[None, :]
    return prod @ candidates.T


def volume(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """GRAM volume [Q, C] of anchor rows [Q, d] with candidate tuples (each [C, d])."""
    return gram_volume(anchor, others)


def neg_volume(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """``-volume``: a score where higher is better, for ranking."""
    return -gram_volume(anchor, others)


SIMILARITIES = {"cosine": cosine, "mip": mip, "volume": neg_volume}
