"""Every pairwise/multi-view loss against a hand computation with plain Python loops.

The expected numbers are computed here element by element with ``math`` on
Python floats (no torch ops, not the library's code path), on small explicit
embeddings.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError
from audiocl.losses import build_loss
from audiocl.losses.alignment import alignment_loss, uniformity_loss
from audiocl.losses.clip import clip_loss
from audiocl.losses.cwcl import cwcl_loss
from audiocl.losses.dcl import dcl_loss
from audiocl.losses.distill import embedding_distill_loss, similarity_distill_loss
from audiocl.losses.hardneg import hardneg_loss
from audiocl.losses.multipositive import multipositive_loss
from audiocl.losses.mvinfonce import mv_infonce_loss
from audiocl.losses.siglip import siglip_loss
from audiocl.losses.similarity import cosine, mip, neg_volume

X = [[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.48, 0.0, 0.877496], [1.0, 0.0, 0.0]]
Y = [[0.8, 0.6, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0], [0.6, 0.0, -0.8]]
Z = [[0.0, 0.8, 0.6], [1.0, 0.0, 0.0], [0.6, -0.8, 0.0], [0.0, 0.0, 1.0]]
T = 2.5


def tens(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def dot(u, v) -> float:
    return sum(a * b for a, b in zip(u, v))


def lse(vals) -> float:
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def sim(A, B, t=T):
    return [[t * dot(a, b) for b in B] for a in A]


def ce_rows(L, targets) -> float:
    return sum(lse(row) - row[k] for row, k in zip(L, targets)) / len(L)


def transpose(L):
    return [list(c) for c in zip(*L)]


def close(a: torch.Tensor, b: float, tol: float = 1e-10) -> None:
    assert abs(float(a.detach()) - b) < tol, (float(a.detach()), b)


def test_clip() -> None:
    L = sim(X, Y)
    n = len(X)
    expected = 0.5 * (ce_rows(L, range(n)) + ce_rows(transpose(L), range(n)))
    close(clip_loss(tens(X), tens(Y), T), expected)
    out = {"embeddings": {"audio": tens(X), "text": tens(Y)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    close(build_loss("clip")(out), expected)


def test_siglip() -> None:
    b = -1.5
    total = 0.0
    for i, x in enumerate(X):
        for j, y in enumerate(Y):
            z = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-z * (T * dot(x, y) + b)))
    expected = total / len(X)
    close(siglip_loss(tens(X), tens(Y), T, b), expected)
    out = {
        "embeddings": {"a": tens(X), "b": tens(Y)},
        "logit_scale": torch.tensor(T, dtype=torch.float64),
        "logit_bias": torch.tensor(b, dtype=torch.float64),
    }
    close(build_loss("siglip", modalities=("a", "b"))(out), expected)
    with pytest.raises(AudioclError, match="bias"):
        build_loss("siglip", modalities=("a", "b"))({**out, "logit_bias": None})


def _dcl_expected(t: float) -> float:
    L = sim(X, Y, t)
    n = len(X)

    def rows(M):
        return sum(lse([M[i][j] for j in range(n) if j != i]) - M[i][i] for i in range(n)) / n

    return 0.5 * (rows(L) + rows(transpose(L)))


def test_dcl_masks_positive_exactly() -> None:
    close(dcl_loss(tens(X), tens(Y), T), _dcl_expected(T))
    # at a large scale an additive log(eps) leaks the positive back in; -inf does not
    close(dcl_loss(tens(X), tens(Y), 100.0), _dcl_expected(100.0), tol=1e-8)


def test_cwcl() -> None:
    n = len(X)
    W = [[1.0 if i == j else min(1.0, max(0.0, (1 + dot(Y[i], Y[j])) / 2)) for j in range(n)] for i in range(n)]

    def direction(L, Wm):
        total = 0.0
        for i in range(n):
            lz = lse(L[i])
            total += -sum(Wm[i][j] * (L[i][j] - lz) for j in range(n)) / sum(Wm[i])
        return total / n

    L = sim(X, Y)
    expected = direction(L, W) + direction(transpose(L), transpose(W))
    close(cwcl_loss(tens(X), tens(Y), T), expected)
    out = {"embeddings": {"speech": tens(X), "text": tens(Y)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    close(build_loss("cwcl", modalities=("speech", "text"), frozen="text")(out), expected)
    # the frozen modality's weights are targets: no gradient flows through them
    y = tens(Y).requires_grad_()
    cwcl_loss(tens(X), y, T).backward()
    y_const = tens(Y).requires_grad_()
    cwcl_loss(tens(X), y_const, T, weights=torch.tensor(W, dtype=torch.float64)).backward()
    torch.testing.assert_close(y.grad, y_const.grad)
    # with identity weights CWCL is twice CLIP
    w = torch.eye(4, dtype=torch.float64)
    close(cwcl_loss(tens(X), tens(Y), T, weights=w), 2 * float(clip_loss(tens(X), tens(Y), T)))


@pytest.mark.parametrize("mode", ["out", "in"])
def test_multipositive(mode: str) -> None:
    # 3 clips (X[:3]), 4 captions: caption 3 also belongs to clip 0
    owner = [0, 1, 2, 0]
    A, C = X[:3], Y
    L = sim(A, C)
    P = [[owner[j] == i for j in range(4)] for i in range(3)]

    def rows(M, Pm):
        total = 0.0
        for row, prow in zip(M, Pm):
            lz = lse(row)
            pos = [v for v, p in zip(row, prow) if p]
            if mode == "out":
                total += -sum(v - lz for v in pos) / len(pos)
            else:
                total += lz - lse(pos)
        return total / len(M)

    expected = 0.5 * (rows(L, P) + rows(transpose(L), transpose(P)))
    mask = torch.tensor(P)
    close(multipositive_loss(tens(A), tens(C), mask, T, mode), expected)
    out = {"embeddings": {"audio": tens(A), "text": tens(C)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    loss = build_loss("multipositive", mode=mode)
    close(loss(out, {"text_owner": torch.tensor(owner)}), expected)
    with pytest.raises(AudioclError, match="positive"):
        multipositive_loss(tens(A), tens(C[:3]), torch.zeros(3, 3, dtype=torch.bool), T, mode)


def test_hardneg() -> None:
    # 2 clips, K = 2 hard negatives each; clip 1's second negative is padding
    audio = X[:2]
    blocks = [[Y[0], Z[0], Z[1]], [Y[1], Z[2], Z[3]]]
    valid = [[True, True, True], [True, True, False]]
    n, b = 2, 3
    a2t = 0.0
    for i in range(n):
        cands = [T * dot(audio[i], blocks[j][0]) for j in range(n)]  # everyone's positive
        cands += [T * dot(audio[i], blocks[i][s]) for s in range(1, b) if valid[i][s]]
        a2t += lse(cands) - T * dot(audio[i], blocks[i][0])
    a2t /= n
    Lt = sim([blk[0] for blk in blocks], audio)
    expected = 0.5 * (a2t + ce_rows(Lt, range(n)))
    y = torch.tensor(blocks, dtype=torch.float64)
    close(hardneg_loss(tens(audio), y, T, torch.tensor(valid)), expected)
    out = {"embeddings": {"audio": tens(audio), "text": y.reshape(n * b, 3)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    loss = build_loss("hardneg", num_negatives=2)
    close(loss(out, {"hard_negative_mask": torch.tensor(valid)}), expected)
    # K = 0 is CLIP
    close(hardneg_loss(tens(X), tens(Y)[:, None, :], T), float(clip_loss(tens(X), tens(Y), T)))


def test_alignment_uniformity_and_finite_gradient_at_zero_distance() -> None:
    n = len(X)
    align = sum(sum((a - b) ** 2 for a, b in zip(X[i], Y[i])) for i in range(n)) / n
    close(alignment_loss(tens(X), tens(Y)), align)
    terms = [
        math.exp(-2 * sum((a - b) ** 2 for a, b in zip(X[i], X[j]))) for i in range(n) for j in range(i + 1, n)
    ]
    close(uniformity_loss(tens(X)), math.log(sum(terms) / len(terms)))
    dup = tens([X[0], X[0], X[1]]).requires_grad_()
    uniformity_loss(dup).backward()
    assert torch.isfinite(dup.grad).all()
    unif_y = math.log(
        sum(math.exp(-2 * sum((a - b) ** 2 for a, b in zip(Y[i], Y[j]))) for i in range(n) for j in range(i + 1, n))
        / 6
    )
    out = {"embeddings": {"audio": tens(X), "text": tens(Y)}}
    loss = build_loss("align_uniform", align_weight=2.0, uniform_weight=0.5)
    close(loss(out), 2.0 * align + 0.5 * 0.5 * (math.log(sum(terms) / 6) + unif_y))


def test_distillation() -> None:
    n = len(X)
    cos_exp = sum(1 - dot(X[i], Z[i]) / math.sqrt(dot(X[i], X[i]) * dot(Z[i], Z[i])) for i in range(n)) / n
    close(embedding_distill_loss(tens(X), tens(Z), "cosine"), cos_exp, tol=1e-6)
    mse_exp = sum(sum((a - b) ** 2 for a, b in zip(X[i], Z[i])) for i in range(n)) / n
    close(embedding_distill_loss(tens(X), tens(Z), "mse"), mse_exp)
    S, Tt = sim(X, Y, 2.0), sim(Z, Y, 3.0)

    def kl_rows(P, Q):
        total = 0.0
        for p_row, q_row in zip(P, Q):
            lp, lq = lse(p_row), lse(q_row)
            total += sum(math.exp(p - lp) * ((p - lp) - (q - lq)) for p, q in zip(p_row, q_row))
        return total / len(P)

    expected = 0.5 * (kl_rows(Tt, S) + kl_rows(transpose(Tt), transpose(S)))
    close(similarity_distill_loss(tens(X), tens(Y), tens(Z), tens(Y), 2.0, 3.0), expected)
    out = {"embeddings": {"audio": tens(X), "text": tens(Y)}, "logit_scale": torch.tensor(2.0, dtype=torch.float64)}
    batch = {"teacher_embeddings": {"t_audio": tens(Z), "t_text": tens(Y)}}
    loss = build_loss("distill", student="audio", teacher="t_audio", mode="kl", pair="text", teacher_pair="t_text", teacher_scale=3.0)
    close(loss(out, batch), expected)


def _mv_expected(views, t) -> float:
    m, n = len(views), len(views[0])
    total = 0.0
    for i in range(n):
        pos = [t * dot(views[a][i], views[b][i]) for a in range(m) for b in range(m) if a != b]
        neg = [t * dot(views[a][i], views[b][j]) for a in range(m) for b in range(m) for j in range(n) if j != i]
        total += lse(pos + neg) - lse(pos)
    return total / n


def test_mv_infonce() -> None:
    close(mv_infonce_loss([tens(X), tens(Y), tens(Z)], T), _mv_expected([X, Y, Z], T))
    close(mv_infonce_loss([tens(X), tens(Y)], T), _mv_expected([X, Y], T))
    out = {"embeddings": {"a": tens(X), "b": tens(Y), "c": tens(Z)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    close(build_loss("mvinfonce", modalities=("a", "b", "c"))(out), _mv_expected([X, Y, Z], T))
    # many views at a large scale in float32: sums of log-sum-exp stay finite
    g = torch.Generator().manual_seed(0)
    views = [F.normalize(torch.randn(16, 8, generator=g), dim=1) for _ in range(12)]
    assert torch.isfinite(mv_infonce_loss(views, 100.0))


def test_pairwise_and_combined() -> None:
    L_xy, L_xz, L_yz = (
        0.5 * (ce_rows(sim(A, B), range(4)) + ce_rows(transpose(sim(A, B)), range(4)))
        for A, B in ((X, Y), (X, Z), (Y, Z))
    )
    out = {"embeddings": {"a": tens(X), "b": tens(Y), "c": tens(Z)}, "logit_scale": torch.tensor(T, dtype=torch.float64)}
    close(build_loss("pairwise", modalities=("a", "b", "c"))(out), L_xy + L_xz + L_yz)
    close(build_loss("pairwise", modalities=("a", "b", "c"), anchor="a")(out), L_xy + L_xz)
    close(build_loss("pairwise", modalities=("a", "b", "c"), reduction="mean")(out), (L_xy + L_xz + L_yz) / 3)
    comb = build_loss(
        "combined",
        terms=[{"name": "clip", "modalities": ("a", "b"), "weight": 1.0}, {"name": "align_uniform", "modalities": ("a", "b"), "uniform_weight": 0.0, "weight": 0.25}],
    )
    align = sum(sum((p - q) ** 2 for p, q in zip(X[i], Y[i])) for i in range(4)) / 4
    close(comb(out), L_xy + 0.25 * align)


def test_similarity_functions() -> None:
    close(cosine(tens(X) * 3.0, tens(Y))[2, 1], dot(X[2], Y[1]) / math.sqrt(dot(X[2], X[2])), tol=1e-6)
    s = mip([tens(X), tens(Y)], tens(Z))
    close(s[1, 3], sum(X[1][d] * Y[1][d] * Z[3][d] for d in range(3)))
    v = neg_volume(tens(X), [tens(Y), tens(Z)])
    i, j = 0, 2
    p, q, r = dot(X[i], Y[j]), dot(X[i], Z[j]), dot(Y[j], Z[j])
    gram = [[dot(X[i], X[i]), p, q], [p, dot(Y[j], Y[j]), r], [q, r, dot(Z[j], Z[j])]]
    det = (
        gram[0][0] * (gram[1][1] * gram[2][2] - gram[1][2] * gram[2][1])
        - gram[0][1] * (gram[1][0] * gram[2][2] - gram[1][2] * gram[2][0])
        + gram[0][2] * (gram[1][0] * gram[2][1] - gram[1][1] * gram[2][0])
    )
    close(v[i, j], -math.sqrt(abs(det)), tol=1e-6)


def test_registry_errors() -> None:
    with pytest.raises(AudioclError, match="unknown loss"):
        build_loss("nope")
    with pytest.raises(AudioclError, match="bad options"):
        build_loss("clip", temperature=3)
    out = {"embeddings": {"audio": tens(X)}, "logit_scale": torch.tensor(1.0)}
    with pytest.raises(AudioclError, match="'text'"):
        build_loss("clip")(out)
