"""Multi-caption retrieval protocol and chunked top-k (audiocl.eval.retrieval)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M
from audiocl.eval.retrieval import captions_per_clip, retrieval_metrics, topk_chunked

# 3 clips (rows a0, a1, a2) x 15 captions (c0..c14); caption j describes clip j // 5.
S = torch.tensor(
    [
        [.90, .80, .30, .20, .10, .85, .50, .05, .04, .03, .70, .02, .01, .00, -.10],
        [.10, .20, .30, .40, .50, .60, -.50, -.60, -.70, .90, .95, .05, .00, -.10, -.20],
        [.15, .25, .35, .45, .55, .65, .75, .85, .95, 1.05, -.10, -.20, -.30, -.40, -.50],
    ],
    dtype=torch.float64,
)


def test_multicaption_protocol_worked_example():
    """3 clips x 5 captions, similarity S above (audio = identity, text = S columns).

    Audio-to-text (row a ranks all 15 captions, descending):
      a0: c0 .90(1) c5 .85(2) c1 .80(3) c10 .70(4) c6 .50(5) c2 .30(6) c3 .20(7)
          c4 .10(8) ... -> own captions c0..c4 at ranks 1, 3, 6, 7, 8; best 1;
          AP@10 = (1/1 + 2/3 + 3/6 + 4/7 + 5/8) / 5 = 0.672619
      a1: c10 .95(1) c9 .90(2) c5 .60(3) ... c6..c8 at 13, 14, 15
          -> own captions (c5..c9) ranks 3, 13, 14, 15, 2; best 2;
          AP@10 sorted = (1/2 + 2/3) / 5 = 0.233333
          (LAION code order c5 then c9: (1/3 + 2/2) / 5 = 0.266667)
      a2: c9..c0 take ranks 1..10, own captions c10..c14 at 11..15; best 11; AP 0
      R@1 = 1/3, R@5 = R@10 = 2/3, MRR = (1 + 1/2 + 1/11)/3 = 0.530303,
      median rank = 2, mean rank = 14/3,
      mAP@10 = (0.672619 + 0.233333 + 0)/3 = 0.301984 (LAION order: 0.313095).
    Text-to-audio (caption column ranks its clip among a0, a1, a2):
      c0 (.90,.10,.15)->1  c1 (.80,.20,.25)->1
      c2 (.30,.30,.35)->3  (a1 ties a0 at .30: pessimistic, counts above)
      c3, c4 -> 3; c5 (.85,.60,.65)->3; c6, c7, c8 -> 3; c9 (.03,.90,1.05)->2;
      c10..c14 (clip a2 lowest in each) -> 3
      ranks [1,1,3,3,3,3,3,3,3,2,3,3,3,3,3]: R@1 = 2/15, R@5 = R@10 = 1,
      mAP@10 = MRR = (1 + 1 + 1/2 + 12/3)/15 = 0.433333, median 3, mean 40/15.
    """
    audio = torch.eye(3, dtype=torch.float64)
    text = S.T.contiguous()
    t2a = torch.arange(15) // 5
    for chunk, qchunk in [(16384, 1024), (4, 2), (1, 1)]:
        res = retrieval_metrics(audio, text, t2a, chunk=chunk, query_chunk=qchunk)
        ta, at = res["text_to_audio"], res["audio_to_text"]
        assert ta["R@1"] == pytest.approx(2 / 15)
        assert ta["R@5"] == 1.0 and ta["R@10"] == 1.0
        assert ta["mAP@10"] == pytest.approx(6.5 / 15)
        assert ta["MRR"] == pytest.approx(6.5 / 15)
        assert ta["median_rank"] == 3.0
        assert ta["mean_rank"] == pytest.approx(40 / 15)
        assert at["R@1"] == pytest.approx(1 / 3)
        assert at["R@5"] == pytest.approx(2 / 3) and at["R@10"] == pytest.approx(2 / 3)
        ap0 = (1 + 2 / 3 + 3 / 6 + 4 / 7 + 5 / 8) / 5
        assert at["mAP@10"] == pytest.approx((ap0 + (1 / 2 + 2 / 3) / 5) / 3)
        assert at["mAP@10"] == pytest.approx(0.301984, abs=1e-6)
        assert at["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)
        assert at["median_rank"] == 2.0
        assert at["mean_rank"] == pytest.approx(14 / 3)
        assert res["n_audio"] == 3 and res["n_text"] == 15
        assert res["protocol"] == "laion-clap-multicaption"
    laion = retrieval_metrics(audio, text, t2a, a2t_map_sorted=False)
    assert laion["audio_to_text"]["mAP@10"] == pytest.approx(0.313095, abs=1e-6)


def _argsort_reference(audio: np.ndarray, text: np.ndarray, t2a: np.ndarray) -> dict:
    """Independent re-statement of the protocol with full sorting (no ties in use)."""
    sim = audio @ text.T  # [A, T]
    out = {}
    # text-to-audio: position of the true clip in each caption's sorted list
    order = np.argsort(-sim.T, axis=1, kind="stable")
    r_t = np.array([np.where(order[j] == t2a[j])[0][0] + 1 for j in range(len(t2a))])
    out["t2a"] = {
        "R@1": np.mean(r_t <= 1), "R@5": np.mean(r_t <= 5), "R@10": np.mean(r_t <= 10),
        "mAP@10": np.mean(np.where(r_t <= 10, 1 / r_t, 0)), "mean_rank": r_t.mean(),
        "median_rank": np.floor(np.median(r_t)),
    }
    best, aps = [], []
    order_a = np.argsort(-sim, axis=1, kind="stable")
    for a in range(audio.shape[0]):
        caps = np.where(t2a == a)[0]
        rr = np.array([np.where(order_a[a] == c)[0][0] + 1 for c in caps])
        best.append(rr.min())
        hits = np.sort(rr[rr <= 10])
        aps.append(np.sum(np.arange(1, len(hits) + 1) / hits) / len(caps))
    best = np.array(best)
    out["a2t"] = {"R@1": np.mean(best <= 1), "R@10": np.mean(best <= 10), "mAP@10": np.mean(aps),
                  "MRR": np.mean(1 / best)}
    return out


def test_matches_argsort_reference_on_random_embeddings():
    rng = np.random.default_rng(7)
    a, per, d = 60, 5, 16
    audio = rng.standard_normal((a, d)).astype(np.float32)
    text = (np.repeat(audio, per, axis=0) + 1.5 * rng.standard_normal((a * per, d))).astype(np.float32)
    t2a = np.repeat(np.arange(a), per)
    ref = _argsort_reference(audio.astype(np.float64), text.astype(np.float64), t2a)
    res = retrieval_metrics(torch.from_numpy(audio), torch.from_numpy(text), torch.from_numpy(t2a),
                            chunk=37, query_chunk=13)
    for key, val in ref["t2a"].items():
        assert res["text_to_audio"][key] == pytest.approx(val), key
    for key, val in ref["a2t"].items():
        assert res["audio_to_text"][key] == pytest.approx(val), key
    # a non-trivial case: neither perfect nor hopeless
    assert 0.1 < res["text_to_audio"]["R@1"] < 0.9


@pytest.mark.parametrize("chunk,qchunk", [(2, 41), (7, 5), (100, 3), (10_000, 10_000)])
def test_topk_chunked_equals_full(chunk, qchunk):
    gen = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(41, 24, generator=gen), dim=1)
    g = torch.nn.functional.normalize(torch.randn(203, 24, generator=gen), dim=1)
    pos = torch.randint(0, 203, (41, 3), generator=gen)
    pos[::4, 2] = -1  # padding
    res = topk_chunked(q, g, 10, chunk, positives=pos, query_chunk=qchunk)
    full = q @ g.T
    ref_s, ref_i = torch.topk(full, 10, dim=1)
    assert torch.equal(res.indices, ref_i)
    assert torch.allclose(res.scores, ref_s, atol=1e-6)
    assert torch.equal(res.ranks, M.ranks_from_similarity(full, pos))
    one = topk_chunked(q, g, 5, chunk, positives=pos[:, 0], query_chunk=qchunk)
    assert torch.equal(one.ranks, M.ranks_from_similarity(full, pos[:, 0]))


def test_topk_chunked_ties_are_pessimistic_and_order_free():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.5, 0.0], [0.5, 1.0], [0.5, -1.0], [0.2, 0.0]])
    res = topk_chunked(q, g, 2, chunk=1, positives=torch.tensor([2]))
    assert res.ranks.tolist() == [3]  # three items score 0.5
    res = topk_chunked(q, g[[3, 2, 1, 0]], 2, chunk=2, positives=torch.tensor([1]))
    assert res.ranks.tolist() == [3]


@settings(max_examples=15, deadline=None)
@given(a=st.integers(2, 15), per=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_perfect_model_and_gallery_permutation(a, per, seed):
    gen = torch.Generator().manual_seed(seed)
    audio = torch.nn.functional.normalize(torch.randn(a, 8, generator=gen), dim=1)
    t2a = torch.arange(a).repeat_interleave(per)
    # perfect: each caption embedding equals its clip's embedding, and clips
    # are distinct, so the true clip is strictly best for every caption
    perfect = retrieval_metrics(audio, audio[t2a], t2a)
    assert perfect["text_to_audio"]["R@1"] == 1.0
    assert perfect["audio_to_text"]["R@1"] == 1.0
    noisy = audio[t2a] + 0.8 * torch.randn(a * per, 8, generator=gen)
    base = retrieval_metrics(audio, noisy, t2a)
    pa = torch.randperm(a, generator=gen)
    pt = torch.randperm(a * per, generator=gen)
    inv_a = torch.argsort(pa)
    permuted = retrieval_metrics(audio[pa], noisy[pt], inv_a[t2a[pt]])
    for direction in ("text_to_audio", "audio_to_text"):
        for key, val in base[direction].items():
            assert permuted[direction][key] == pytest.approx(val), (direction, key)


def test_random_model_recall_about_k_over_n():
    gen = torch.Generator().manual_seed(11)
    n = 100
    audio = torch.nn.functional.normalize(torch.randn(n, 64, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(20 * n, 64, generator=gen), dim=1)
    t2a = torch.arange(n).repeat(20)
    res = retrieval_metrics(audio, text, t2a)
    # 2000 caption queries; R@k ~ k/100 with sd sqrt(p(1-p)/2000) (rows correlate
    # through shared clips, so allow 5 sd)
    for k in (1, 5, 10):
        p = k / n
        assert abs(res["text_to_audio"][f"R@{k}"] - p) < 5 * np.sqrt(p * (1 - p) / 2000) + 0.005


def test_speech_flavour_and_errors():
    audio = torch.eye(3)
    res = retrieval_metrics(audio, audio, torch.arange(3), speech=True)
    for direction in ("text_to_audio", "audio_to_text"):
        assert res[direction]["HITS@1"] == 1.0
        assert res[direction]["meanR"] == 1.0
        assert res[direction]["MRR"] == 1.0
    with pytest.raises(AudioclError):
        retrieval_metrics(audio, audio, torch.arange(2))
    with pytest.raises(AudioclError):
        retrieval_metrics(audio, audio * float("nan"), torch.arange(3))
    # a clip without caption is a distractor, not an audio-to-text query
    res = retrieval_metrics(torch.eye(4), torch.eye(4)[:3], torch.arange(3))
    assert res["n_audio_queries"] == 3 and res["n_audio"] == 4
    assert captions_per_clip(torch.tensor([1, 0, 1]), 3).tolist() == [[1, -1], [0, 2], [-1, -1]]
