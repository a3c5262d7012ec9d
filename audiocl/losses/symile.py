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

Implementation of the O(N^2) form: the candidates of an anchor factor as
``(x_m[i] * P[r]) . o_last[k]`` where ``P`` [N^(M-2), d] holds the elementwise
products of all tuples of the first M-2 other modalities (``P = ones[1, d]`` for
M = 2, ``P = o_1`` for M = 3). For a chunk of C anchors, the logits are one
batched matmul ``(x_m[chunk, None] * P[None]) @ o_last^T`` -> [C, N^(M-2), N]; the
log-sum-exp over them and its gradients are computed chunk by chunk in one
custom autograd function, so memory stays O(C * N^(M-1)) instead of the
O(N^M) that autograd would keep (no N^(M-1) x d concatenated copy is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses import distributed as D
from audiocl.losses._common import as_scale, check_same_shape, get_embeddings, get_logit_scale

#: elements of one chunk's [C, R, N] logits block (64 MB in float32).
CHUNK_ELEMENTS = 1 << 24


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


class _SymileLogSumExp(torch.autograd.Function):
    """``sum_i logsumexp_{r,k} t * sum_d a[i,d] P[r,d] z[k,d]`` with gradients fused in.

    a: [n, d] anchors, P: [R, d], z: [N, d], t: 0-d. Returns a 0-d tensor. The
    output is a scalar, so its gradient is one number ``g`` and every input
    gradient is ``g`` times a quantity computable during the forward pass: the
    softmax of each chunk is used once for the value and the three gradient
    matmuls, then freed. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, a: Tensor, P: Tensor, z: Tensor, t: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        need = ctx.needs_input_grad
        want_grad = any(need[:4])
        n, d = a.shape
        R, N = P.shape[0], z.shape[0]
        total = a.new_zeros(())
        ga = torch.zeros_like(a) if need[0] else None
        gP = torch.zeros_like(P) if need[1] else None
        gz = torch.zeros_like(z) if need[2] else None
        gt = a.new_zeros(()) if need[3] else None
        zT = z.T
        for s in range(0, n, chunk):
            A = a[s : s + chunk]
            C = A.shape[0]
            Q = (A[:, None, :] * P[None, :, :]).reshape(C * R, d)
            raw = (Q @ zT).view(C, R * N)
            logits = raw * t
            lse = torch.logsumexp(logits, dim=1)
            total = total + lse.sum()
            if not want_grad:
                continue
            S = logits.sub_(lse[:, None]).exp_()  # softmax, reusing the logits buffer
            if gt is not None:
                gt = gt + (S * raw).sum()
            del raw
            S2 = S.view(C * R, N)
            if ga is not None or gP is not None:
                SZ = (S2 @ z).view(C, R, d)
                if ga is not None:
                    ga[s : s + C] = torch.einsum("crd,rd->cd", SZ, P) * t
                if gP is not None:
                    gP += torch.einsum("crd,cd->rd", SZ, A) * t
                del SZ
            if gz is not None:
                gz += (S2.T @ Q) * t
        ctx.save_for_backward(*(g if g is not None else a.new_zeros(()) for g in (ga, gP, gz, gt)))
        ctx.has = tuple(g is not None for g in (ga, gP, gz, gt))
        return total

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors
        grads = [saved[k] * g if ctx.has[k] else None for k in range(4)]
        return (*grads, None)


def _chunk_size(R: int, N: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, R * N))


def symile_anchor_lse(
    anchor: Tensor, others: Sequence[Tensor], logit_scale: Tensor | float, *, chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """``sum_i logsumexp`` over all N^(M-1) candidate tuples for anchor rows ``anchor`` [n, d].

    ``others``: the M-1 other modalities, each [N, d]. Returns a 0-d tensor.
    """
    d = anchor.shape[1]
    t = as_scale(logit_scale, anchor)
    P = _tuple_products(others[:-1], d, anchor)
    z = others[-1]
    chunk = _chunk_size(P.shape[0], z.shape[0], chunk_elements)
    return _SymileLogSumExp.apply(anchor, P, z, t, chunk)


def symile_loss_n_squared(
    xs: Sequence[Tensor],
    logit_scale: Tensor | float,
    *,
    rows: tuple[int, int] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """Symile with all N^(M-1) candidate tuples per anchor row (see module docstring).

    Args:
        xs: M >= 2 tensors [N, d].
        logit_scale: exp'd temperature multiplier ``t``.
        rows: optional ``(offset, n)``: only anchor rows ``offset..offset+n`` (a rank's
            share in distributed training); the result is then scaled by W/N so the
            mean over ranks is the full loss.
    Returns:
        0-d tensor ``(1/M) sum_m mean_i [logsumexp_cand logits_m[i] - logits_m[i, (i..i)]]``.
    """
    if len(xs) < 2:
        raise AudioclError("symile needs at least two modalities")
    check_same_shape(xs)
    N = xs[0].shape[0]
    t = as_scale(logit_scale, xs[0])
    off, n = (0, N) if rows is None else rows
    pos = t * mip([x[off : off + n] for x in xs]).sum()
    losses = []
    for m in range(len(xs)):
        others = [x for k, x in enumerate(xs) if k != m]
        lse = symile_anchor_lse(xs[m][off : off + n], others, t, chunk_elements=chunk_elements)
        losses.append(lse - pos)
    scale = (1.0 / N) if rows is None else (D.world_size() / N)
    return torch.stack(losses).mean() * scale


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
    permutations are drawn on rank 0 (from ``generator`` or torch's global RNG)
    and broadcast, so every rank computes the same global loss. A batch may
    carry ``batch["symile_permutations"]`` to fix them. ``local_loss=True``
    (O(N^2) form) restricts the anchors to this rank's rows.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        negatives: str = "n_squared",
        local_loss: bool = False,
        chunk_elements: int = CHUNK_ELEMENTS,
    ):
        super().__init__()
        if len(modalities) < 2:
            raise AudioclError("symile needs at least two modalities")
        if negatives not in ("n", "n_squared"):
            raise AudioclError(f"symile negatives must be 'n' or 'n_squared', got {negatives!r}")
        self.modalities = tuple(modalities)
        self.negatives = negatives
        self.local_loss = local_loss
        self.chunk_elements = chunk_elements
        self.generator: torch.Generator | None = None

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        xs = get_embeddings(outputs, self.modalities)
        t = get_logit_scale(outputs)
        n_local = xs[0].shape[0]
        xs = D.gather_many(xs)
        if self.negatives == "n_squared":
            rows = None
            if self.local_loss and D.is_distributed():
                rows = (D.local_offset(n_local, xs[0].device)[0], n_local)
            return symile_loss_n_squared(xs, t, rows=rows, chunk_elements=self.chunk_elements)
        perms = None if batch is None else batch.get("symile_permutations")
        if perms is None:
            N, M = xs[0].shape[0], len(xs)
            flat = torch.stack(
                [p for ps in draw_permutations(N, M, generator=self.generator) for p in ps]
            ).to(xs[0].device)
            flat = D.broadcast_from_rank0(flat)
            perms = [list(flat[m * (M - 1) : (m + 1) * (M - 1)]) for m in range(M)]
        return symile_loss_n(xs, t, perms)
