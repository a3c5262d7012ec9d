"""Symile: contrastive loss on the multilinear inner product (MIP) of M >= 2 modalities.

Shapes: M embeddings ``x_1 .. x_M``, each [N, d] (row i of all of them is one
positive tuple); ``t`` the exp'd temperature multiplier (0-d).

    MIP(u_1, ..., u_M) = sum_d prod_m u_m[d]

For each anchor modality m in turn, with the other modalities o_1 .. o_{M-1}
(in index order):

* ``negatives="n_squared"`` (O(N^2) negatives for M = 3; N^(M-1) candidates in
  general): candidates are **all** tuples (j_1, .., j_{M-1}) of rows of the
  other modalities, ``logits[i, (j_1..j_{M-1})] = t * MIP(x_m[i], o_1[j_1], ..)``
  of shape [N, N^(M-1)], and the positive of row i is the tuple (i, .., i).
* ``negatives="n"`` (O(N)): one random permutation ``p_k`` per other modality;
  ``logits[i, j] = t * MIP(x_m[i], o_1[p_1[j]], ..)`` for ``j != i`` and the
  positive ``t * MIP(x_m[i], o_1[i], ..)`` on the diagonal, shape [N, N].

``L_m = CE(logits, positives)`` (mean over rows) and ``L = (1/M) sum_m L_m``:
anchor-to-rest only, averaged over anchors, as in the ``symile`` package. The
cross-entropy does not depend on the order of the candidate columns, so any
enumeration of the N^(M-1) tuples gives the same value.

Implementation of the O(N^2) form: the candidates factor as
``T[i, r, k] = t * sum_d x_1[i,d] P[r,d] x_M[k,d]`` where ``P`` [N^(M-2), d]
holds the elementwise products of all row tuples of the middle modalities
(``P = ones[1, d]`` for M = 2, ``P = x_2`` for M = 3). This one tensor of N^M
logits serves **every** anchor: anchor m's log-sum-exp for its row reduces T
over all indices but the m-th. It is computed in chunks of rows of x_1 as
matmuls ``(x_1[chunk, None] * P[None]) @ x_M^T`` inside one custom autograd
function (pass 1: values; pass 2: gradients, recomputing a chunk's logits
unless the whole tensor is small enough to keep), so memory stays
O(chunk * N^(M-1)) and the work is 3-4 N^M d multiply-adds in all, against
3 per anchor (3 M in all) for a per-anchor autograd computation. No Python
loop runs over candidate tuples and no N^(M-1) x d copy is concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import (
    as_scale,
    check_same_shape,
    get_embeddings,
    get_logit_scale,
    no_autocast,
    upcast,
)

#: elements of one chunk's [C, R, N] logits block (8 MB in float32): small enough to
#: stay in cache-friendly sizes, large enough for efficient matmuls.
CHUNK_ELEMENTS = 1 << 21


def mip(xs: Sequence[Tensor]) -> Tensor:
    """Row-wise multilinear inner product of aligned rows: ``sum_d prod_m xs[m][:, d]`` -> [N]."""
    prod = xs[0]
    for x in xs[1:]:
        prod = prod * x
    return prod.sum(-1)


def _tuple_products(xs: Sequence[Tensor], d: int, like: Tensor) -> Tensor:
    """Elementwise products of all row tuples of ``xs`` -> [prod_k N_k, d] (ones[1, d] if empty)."""
    p = torch.ones(1, d, dtype=like.dtype, device=like.device)
    for x in xs:
        p = (p[:, None, :] * x[None, :, :]).reshape(-1, d)
    return p


#: a partial sum of exponentials below this (or a rescaling factor above its
#: inverse) sends a chunk to the exact per-anchor log-sum-exp path.
_TINY = 1e-30
_LOG_HUGE = 69.0  # ~ -log(_TINY)
#: problems whose whole logit tensor has at most this many elements (64 MB in float32)
#: keep the exponentials between the two passes instead of recomputing them.
STORE_ELEMENTS = 1 << 24


class _SymileAllAnchorsLSE(torch.autograd.Function):
    """``sum_m sum_i lse_m[i]`` for every anchor m, from one shared logit tensor.

    With a = x_0 [N, d], P [R, d] (R = N^(M-2), products of the middle
    modalities) and z = x_{M-1} [N, d], the logit tensor
    ``T[i, r, k] = t * sum_d a[i,d] P[r,d] z[k,d]`` is the same for every choice
    of anchor; anchor m's log-sum-exp for its row i_m reduces T over all other
    indices. Two passes over chunks of rows i:

    1. ``E = exp(T - c)`` with c the chunk's maximum (one exp), then the partial
       log-sum-exps of every anchor are ``c + log(sum of E over the other
       indices)`` (plain sums, combined over chunks at the end).
    2. The gradient of the output with respect to T is
       ``W = sum_m exp(T - lse_m[i_m]) = E * sum_m exp(c - lse_m[i_m])`` (again
       one exp); the input gradients follow from ``W @ z`` and ``W^T @ Q``.

    When a sum of E underflows (below 1e-30) or a factor exp(c - lse) would
    exceed 1e30 (large temperatures), that chunk is computed with an exact
    per-anchor log-sum-exp instead, so the result never loses accuracy. The
    output is a scalar, so its incoming gradient is one number: the input
    gradients are computed here and only scaled in ``backward``. Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, a: Tensor, P: Tensor, z: Tensor, t: Tensor, chunk: int, n_mid: int) -> Tensor:
        need = ctx.needs_input_grad
        n, d = a.shape
        R, N = P.shape[0], z.shape[0]
        view = (N,) * n_mid + (N,)  # the [R, N] part of a block, one dim per non-anchor
        zT = z.T
        chunk = min(chunk, n)
        # Work buffers allocated once and reused by every chunk: repeated large
        # temporary allocations fragment the CPU allocator's heap and inflate RSS.
        q_buf = a.new_empty(chunk * R, d)
        t_buf = a.new_empty(chunk * R, N)

        def block(s: int) -> tuple[Tensor, Tensor, Tensor]:
            A = a[s : s + chunk]
            C = A.shape[0]
            Q = q_buf[: C * R]
            torch.mul(A[:, None, :], P[None, :, :], out=Q.view(C, R, d))
            T = t_buf[: C * R]
            torch.mm(Q, zT, out=T)
            return A, Q, T.view(C, *view).mul_(t)

        def other_dims(k: int, ndim: int) -> list[int]:
            return [x for x in range(ndim) if x != k]

        def exact_lses(T: Tensor) -> list[Tensor]:
            return [torch.logsumexp(T, dim=other_dims(k, T.dim())) for k in range(T.dim())]

        starts = list(range(0, n, chunk))
        # Small problems keep pass 1's exponentials for pass 2 instead of recomputing them.
        keep: list[Any] | None = [] if n * R * N <= STORE_ELEMENTS and any(need[:4]) else None
        lse0 = a.new_empty(n)
        partial: list[list[Tensor]] = [[] for _ in range(n_mid + 1)]
        for s in starts:
            A, _, T = block(s)
            C = A.shape[0]
            c = T.max()
            E = T.sub_(c).exp_()  # in place: T is rebuilt if the exact path is needed
            sums = [E.sum(dim=other_dims(k, E.dim())) for k in range(E.dim())]
            if min(float(x.min()) for x in sums) >= _TINY:
                parts = [c + x.log() for x in sums]
                if keep is not None:
                    keep.append((c, E.clone()))
            else:  # exact, per anchor
                parts = exact_lses(block(s)[2])
                if keep is not None:
                    keep.append(None)
            lse0[s : s + C] = parts[0]
            for k in range(n_mid + 1):
                partial[k].append(parts[k + 1])
        lse_rest = [torch.logsumexp(torch.stack(p), dim=0) for p in partial]  # each [N]
        total = lse0.sum() + sum(x.sum() for x in lse_rest)

        ga = torch.zeros_like(a) if need[0] else None
        gP = torch.zeros_like(P) if need[1] else None
        gz = torch.zeros_like(z) if need[2] else None
        gt = a.new_zeros(()) if need[3] else None
        if any(need[:4]):
            f_buf = a.new_empty(chunk * R, N)
            wz_buf = a.new_empty(chunk * R, d)
            tmp = a.new_empty(R, d)
            tf = float(t)
            for ci, s in enumerate(starts):
                A = a[s : s + chunk]
                C = A.shape[0]
                stored = keep[ci] if keep is not None else None
                if keep is not None and stored is not None:
                    keep[ci] = None
                    Q = q_buf[: C * R]
                    torch.mul(A[:, None, :], P[None, :, :], out=Q.view(C, R, d))
                    c, T = stored
                else:
                    A, Q, T = block(s)
                    c = T.max()
                lses = [lse0[s : s + C], *lse_rest]
                logf = [c - x for x in lses]
                fast = max(float(x.max()) for x in logf) <= _LOG_HUGE
                if stored is not None and not fast:  # rare: recompute the logits exactly
                    A, Q, T = block(s)
                    stored = None
                W = T
                if fast:
                    if stored is None:
                        W.sub_(c).exp_()
                    F_ = f_buf[: C * R].view(C, *view)
                    F_.zero_()
                    for k, lf in enumerate(logf):
                        shape = [1] * W.dim()
                        shape[k] = lf.shape[0]
                        F_.add_(lf.exp().view(shape))
                    W.mul_(F_)
                else:  # exact, per anchor
                    acc = f_buf[: C * R].view(C, *view)
                    acc.zero_()
                    for k, lse in enumerate(lses):
                        shape = [1] * T.dim()
                        shape[k] = lse.shape[0]
                        acc.add_((T - lse.view(shape)).exp_())
                    W = acc
                W2 = W.reshape(C * R, N)
                WZ = wz_buf[: C * R]
                torch.mm(W2, z, out=WZ)
                if gt is not None:
                    # sum W * raw logits = sum_(i,r),d Q * (W @ z): no need to keep the logits
                    gt = gt + torch.vdot(WZ.reshape(-1), Q.reshape(-1))
                WZ3 = WZ.view(C, R, d)
                for c_ in range(C):
                    if ga is not None:
                        torch.mul(WZ3[c_], P, out=tmp)
                        ga[s + c_] = tmp.sum(0) * tf
                    if gP is not None:
                        gP.addcmul_(WZ3[c_], A[c_][None, :], value=tf)
                if gz is not None:
                    gz.addmm_(W2.T, Q, alpha=tf)
                del W, W2, T
            keep = None
        ctx.has = tuple(g is not None for g in (ga, gP, gz, gt))
        ctx.save_for_backward(*(g if g is not None else a.new_zeros(()) for g in (ga, gP, gz, gt)))
        return total

    @staticmethod
    def backward(ctx, g: Tensor):
        saved = ctx.saved_tensors
        grads = [saved[k] * g if ctx.has[k] else None for k in range(4)]
        return (*grads, None, None)


def _chunk_size(R: int, N: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, R * N))


def symile_lse_all_anchors(
    xs: Sequence[Tensor], logit_scale: Tensor | float, *, chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """``sum_m sum_i logsumexp`` over the N^(M-1) candidate tuples of anchor m's row i -> 0-d.

    ``xs``: M >= 2 tensors [N, d]. The middle modalities' tuple products
    ``P`` [N^(M-2), d] are formed with autograd; everything else is fused.
    """
    with no_autocast(xs[0]):
        xs = [upcast(x) for x in xs]
        d = xs[0].shape[1]
        t = as_scale(upcast(logit_scale) if isinstance(logit_scale, Tensor) else logit_scale, xs[0])
        P = _tuple_products(xs[1:-1], d, xs[0])
        N = xs[-1].shape[0]
        chunk = _chunk_size(P.shape[0], N, chunk_elements)
        return _SymileAllAnchorsLSE.apply(xs[0], P, xs[-1], t, chunk, len(xs) - 2)


def symile_loss_n_squared(
    xs: Sequence[Tensor],
    logit_scale: Tensor | float,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """Symile with all N^(M-1) candidate tuples per anchor row (see module docstring).

    Args:
        xs: M >= 2 tensors [N, d].
        logit_scale: exp'd temperature multiplier ``t``.
        chunk_elements: size of one block of logits (memory knob, not the value).
    Returns:
        0-d tensor ``(1/M) sum_m mean_i [logsumexp_cand logits_m[i] - logits_m[i, (i..i)]]``.
    """
    if len(xs) < 2:
        raise AudioclError("symile needs at least two modalities")
    check_same_shape(xs)
    xs = [upcast(x) for x in xs]
    N, M = xs[0].shape[0], len(xs)
    t = as_scale(logit_scale, xs[0])
    pos = t * mip(xs).sum()
    lse = symile_lse_all_anchors(xs, t, chunk_elements=chunk_elements)
    return (lse / M - pos) / N


def draw_permutations(
    n: int, num_modalities: int, *, generator: torch.Generator | None = None, device: torch.device | None = None
) -> list[list[Tensor]]:
    """Random permutations for the O(N) form: ``perms[m][k]`` for anchor m and its k-th other modality.

    Drawn with ``torch.randperm(n, generator=generator)`` in anchor-major order
    (anchor 0's others first), the order in which the ``symile`` package draws
    them, so seeding the same generator gives the same permutations.
    """
    return [
        [torch.randperm(n, generator=generator).to(device) for _ in range(num_modalities - 1)]
        for _ in range(num_modalities)
    ]


def symile_loss_n(
    xs: Sequence[Tensor],
    logit_scale: Tensor | float,
    permutations: Sequence[Sequence[Tensor]] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Symile with N candidates per anchor row: shuffled tuples off the diagonal, positives on it.

    ``permutations[m][k]`` ([N] long) permutes the k-th other modality of anchor m;
    drawn with :func:`draw_permutations` when not given. Returns a 0-d tensor.
    """
    if len(xs) < 2:
        raise AudioclError("symile needs at least two modalities")
    check_same_shape(xs)
    N = xs[0].shape[0]
    M = len(xs)
    t = as_scale(logit_scale, xs[0])
    if permutations is None:
        permutations = draw_permutations(N, M, generator=generator, device=xs[0].device)
    if len(permutations) != M or any(len(p) != M - 1 for p in permutations):
        raise AudioclError(f"symile 'n' needs {M} lists of {M - 1} permutations")
    labels = torch.arange(N, device=xs[0].device)
    eye = labels[:, None] == labels[None, :]
    pos = t * mip(xs)
    losses = []
    for m in range(M):
        others = [x for k, x in enumerate(xs) if k != m]
        shuffled = others[0][permutations[m][0]]
        for x, p in zip(others[1:], permutations[m][1:]):
            shuffled = shuffled * x[p]
        logits = t * (xs[m] @ shuffled.T)
        logits = torch.where(eye, pos[:, None], logits)
        losses.append(F.cross_entropy(logits, labels))
    return torch.stack(losses).mean()


def symile_loss(
    xs: Sequence[Tensor],
    logit_scale: Tensor | float,
    negatives: str = "n_squared",
    permutations: Sequence[Sequence[Tensor]] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Dispatch to :func:`symile_loss_n_squared` or :func:`symile_loss_n`."""
    if negatives == "n_squared":
        return symile_loss_n_squared(xs, logit_scale)
    if negatives == "n":
        return symile_loss_n(xs, logit_scale, permutations, generator=generator)
    raise AudioclError(f"symile negatives must be 'n' or 'n_squared', got {negatives!r}")


class SymileLoss(nn.Module):
    """Symile over the named modalities (M >= 2) of the model's output dict.

    Embeddings are gathered over ranks with gradient. In the O(N) form the
    permutations are drawn on rank 0 (from a generator seeded with ``seed``, or
    torch's global RNG when ``seed`` is None)
    and broadcast, so every rank computes the same global loss. A batch may
    carry ``batch["symile_permutations"]`` to fix them. Every rank computes the
    loss of the whole gathered batch (the O(N^2) form shares one logit tensor
    between all anchors, so splitting anchors over ranks would not save work).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        negatives: str = "n_squared",
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
    ):
        super().__init__()
        if len(modalities) < 2:
            raise AudioclError("symile needs at least two modalities")
        if negatives not in ("n", "n_squared"):
            raise AudioclError(f"symile negatives must be 'n' or 'n_squared', got {negatives!r}")
        self.modalities = tuple(modalities)
        self.negatives = negatives
        self.chunk_elements = chunk_elements
        # O(N) form: permutations come from this generator (seeded) or torch's global RNG
        self.generator: torch.Generator | None = (
            None if seed is None else torch.Generator().manual_seed(seed)
        )

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        xs = get_embeddings(outputs, self.modalities)
        t = get_logit_scale(outputs)
        xs = D.gather_many(xs)
        if self.negatives == "n_squared":
            N, M = xs[0].shape[0], len(xs)
            # the products of N^(M-2) tuples are materialised (in chunks of
            # N^(M-2)-row blocks); past this they cannot fit any machine
            if M > 3 and float(N) ** (M - 2) * xs[0].shape[1] > 4e9:
                raise AudioclError(
                    f"symile negatives='n_squared' with {M} modalities and batch {N} scores N^{M - 1} "
                    f"= {float(N) ** (M - 1):.1e} tuples per anchor; use loss kwargs negatives: n (O(N))"
                )
            return symile_loss_n_squared(xs, t, chunk_elements=self.chunk_elements)
        perms = None if batch is None else batch.get("symile_permutations")
        if perms is None:
            N, M = xs[0].shape[0], len(xs)
            flat = torch.stack(
                [p for ps in draw_permutations(N, M, generator=self.generator) for p in ps]
            ).to(xs[0].device)
            flat = D.broadcast_from_rank0(flat)
            perms = [list(flat[m * (M - 1) : (m + 1) * (M - 1)]) for m in range(M)]
        return symile_loss_n(xs, t, perms)
