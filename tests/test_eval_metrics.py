"""Metrics of audiocl.eval.metrics against hand-computed cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M


def test_ranks_hand_case_with_tie():
    # query 0: positive 1 scores 0.5; only 0.9 is higher -> rank 2
    # query 1: positive 0 scores 0.2, tied with item 2 -> pessimistic rank 2
    # query 2: positive 2 is the top -> rank 1
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.1, 0.2], [0.0, 0.3, 0.7]])
    assert M.ranks_from_similarity(sim, torch.tensor([1, 0, 2])).tolist() == [2, 2, 1]
    # several positives, padded with -1
    r = M.ranks_from_similarity(sim, torch.tensor([[1, 0], [0, -1], [2, 1]]))
    assert r.tolist() == [[2, 1], [2, 0], [1, 2]]


def test_ranks_refuse_nan():
    sim = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(AudioclError, match="non-finite"):
        M.ranks_from_similarity(sim, torch.tensor([0]))


def test_rank_metrics_hand_values():
    ranks = torch.tensor([1, 3, 12, 2])
    assert M.recall_at_k(ranks, 1) == 0.25
    assert M.recall_at_k(ranks, 5) == 0.75
    assert M.recall_at_k(ranks, 10) == 0.75
    assert M.hits_at_1(ranks) == 0.25
    assert M.mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 2) / 4)
    assert M.mean_rank(ranks) == 4.5
    # median of 1,2,3,12 is 2.5 -> LAION floors it: 2
    assert M.median_rank(ranks) == 2.0
    assert M.median_rank(torch.tensor([1, 4, 9])) == 4.0
    # t2a mAP@10: 1/1 + 1/3 + 0 (rank 12 > 10) + 1/2, over 4
    assert M.map_at_k_single(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    # the cut-off is inclusive: rank 10 counts (LAION: 0-based rank < 10)
    assert M.map_at_k_single(torch.tensor([10]), 10) == pytest.approx(0.1)
    assert M.map_at_k_single(torch.tensor([11]), 10) == 0.0


def test_map_multi_hand_values():
    # clip with 5 captions at ranks 1, 3, 6, 7, 8 -> (1/1+2/3+3/6+4/7+5/8)/5
    # clip with captions at ranks 3, 13, 14, 15, 2 -> sorted hits 2, 3:
    #   (1/2 + 2/3)/5; LAION's unsorted caption order 3, 2: (1/3 + 2/2)/5
    ranks = torch.tensor([[1, 3, 6, 7, 8], [3, 13, 14, 15, 2]])
    a = (1 + 2 / 3 + 3 / 6 + 4 / 7 + 5 / 8) / 5
    b_sorted = (1 / 2 + 2 / 3) / 5
    b_laion = (1 / 3 + 2 / 2) / 5
    assert M.map_at_k_multi(ranks, 10) == pytest.approx((a + b_sorted) / 2)
    assert M.map_at_k_multi(ranks, 10, sort_ranks=False) == pytest.approx((a + b_laion) / 2)
    # padding (0) is not a caption; n_relevant overrides the divisor
    padded = torch.tensor([[2, 0, 0]])
    assert M.map_at_k_multi(padded, 10) == pytest.approx(0.5)
    assert M.map_at_k_multi(padded, 10, n_relevant=[5]) == pytest.approx(0.1)


def test_classification_hand_values():
    logits = torch.tensor(
        [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.5, 0.5, 0.0]]
    )
    targets = torch.tensor([0, 1, 2, 1])
    # ranks of the true class: 1, 1, 3 (0.4 above, 0.3 tied: pessimistic), 2 (tie)
    assert M.topk_accuracy(logits, targets, 1) == 0.5
    assert M.topk_accuracy(logits, targets, 2) == 0.75
    assert M.topk_accuracy(logits, targets, 3) == 1.0
    pred = torch.tensor([0, 1, 1, 0])
    assert M.per_class_accuracy(pred, targets, 4) == [1.0, 0.5, 0.0, None]
    cm = M.confusion_matrix(pred, targets, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]
    with pytest.raises(AudioclError):
        M.confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_average_precision_hand_and_sklearn():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    rel = torch.tensor([1, 0, 1, 0, 1]).bool()
    # precision at the hits: 1/1, 2/3, 3/5
    assert M.average_precision(scores, rel) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=(200, 6)).astype(np.float64)  # many ties on purpose
    y = rng.random((200, 6)) < 0.3
    y[:, 5] = False  # a class with no positive is excluded from the mean
    m, per = M.mean_average_precision(s, y)
    assert per[5] is None
    ref = [sk.average_precision_score(y[:, c], s[:, c]) for c in range(5)]
    assert per[:5] == pytest.approx(ref, abs=1e-12)
    assert m == pytest.approx(float(np.mean(ref)), abs=1e-12)


def test_empty_and_invalid_inputs_raise():
    with pytest.raises(AudioclError):
        M.recall_at_k(torch.tensor([], dtype=torch.long), 1)
    with pytest.raises(AudioclError):
        M.average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]).bool())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), c=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_perfect_model_scores_one(n, c, seed):
    # the true item/class always scores strictly highest
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(n, max(n, c), generator=g)
    pos = torch.randint(0, sim.shape[1], (n,), generator=g)
    sim[torch.arange(n), pos] = 2.0
    ranks = M.ranks_from_similarity(sim, pos)
    assert M.recall_at_k(ranks, 1) == 1.0
    assert M.mrr(ranks) == 1.0
    assert M.topk_accuracy(sim, pos, 1) == 1.0


@settings(max_examples=20, deadline=None)
@given(q=st.integers(1, 12), g=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_permuting_gallery_changes_nothing(q, g, seed):
    gen = torch.Generator().manual_seed(seed)
    # coarse values so that ties occur: the tie rule must not depend on order
    sim = torch.randint(0, 4, (q, g), generator=gen).float()
    pos = torch.randint(0, g, (q,), generator=gen)
    perm = torch.randperm(g, generator=gen)
    inv = torch.argsort(perm)
    before = M.ranks_from_similarity(sim, pos)
    after = M.ranks_from_similarity(sim[:, perm], inv[pos])
    assert torch.equal(before, after)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_random_model_recall_is_k_over_n(k):
    # with random scores the positive's rank is uniform on 1..N, so R@k = k/N;
    # 4000 queries give a standard error of sqrt(p(1-p)/4000) <= 0.008
    n, q = 50, 4000
    gen = torch.Generator().manual_seed(1234 + k)
    sim = torch.rand(q, n, generator=gen)
    pos = torch.randint(0, n, (q,), generator=gen)
    r = M.recall_at_k(M.ranks_from_similarity(sim, pos), k)
    p = k / n
    assert abs(r - p) < 4 * math.sqrt(p * (1 - p) / q)
    acc = M.topk_accuracy(sim, pos, k)
    assert abs(acc - p) < 4 * math.sqrt(p * (1 - p) / q)
