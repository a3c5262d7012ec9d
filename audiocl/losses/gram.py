"""GRAM: contrastive loss on the volume of the parallelotope spanned by k modalities.

Shapes: an anchor modality ``a`` [N_a, d] (text in the GRAM paper) and k-1 other
modalities ``x_1 .. x_{k-1}``, each [N_t, d] (row j of all of them is tuple j).

For anchor row i and tuple j the k x k Gram matrix of (a_i, x_1j, .., x_{k-1}j) is::

    G_ij = [[c_i,  g_ij^T],       c_i = <a_i, a_i>,  g_ij[m] = <a_i, x_mj>
            [g_ij, B_j   ]]       B_j[m, l] = <x_mj, x_lj>   ((k-1) x (k-1), tuple only)

    V_ij = sqrt(|det G_ij|)                                       # [N_a, N_t]

Only the first row and column of G depend on the pair, so by the cofactor
(Schur) expansion along them::

    det G_ij = c_i det B_j - g_ij^T adj(B_j) g_ij

which holds for singular B_j too. adj(B_j) and det B_j are computed once per
tuple (exact polynomials in the [N_t] entry vectors for k-1 <= 4; LU beyond), and
the [N_a, N_t] volumes need k-1 matmuls plus O(k^2) elementwise products (for
k-1 >= 5 one batched [N_t] x [N_a, k-1] x [k-1, k-1] matmul instead): no
[N_a, N_t, k, k] stack and no batched LU over the N_a N_t pairs. For unit vectors and k = 3 this is
``1 + 2 a b c - a^2 - b^2 - c^2`` (a = <t, v>, b = <t, s>, c = <v, s>).

Loss (both directions, label smoothing 0.1, temperature tau)::

    L = 1/2 * ( CE(-V / tau, arange) + CE(-V^T / tau, arange) )

GRAM's ``contra_temp`` is a raw tau (0.07), not exp'd; the module takes
``tau`` or uses ``1 / outputs["logit_scale"]``.

Zero volume: d sqrt(u)/du is infinite at u = 0 (a collapsed positive tuple, the
state GRAM training drives towards), so the reference gives NaN gradients
there. ``sqrt_abs`` keeps the exact value sqrt(|u|) but uses
``sign(u) / (2 * max(sqrt(|u|), SQRT_EPS))`` as its derivative: identical to the
true derivative wherever the volume exceeds SQRT_EPS, bounded (and 0 at u = 0)
below it.
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
    check_same_shape,
    get_embeddings,
    get_logit_scale,
    no_autocast,
    upcast,
)

#: volumes below this get a bounded derivative (see module docstring).
SQRT_EPS = 1e-6


class _SqrtAbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:
        y = u.abs().sqrt()
        ctx.save_for_backward(u, y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        u, y = ctx.saved_tensors
        return g * torch.sign(u) * 0.5 / y.clamp_min(SQRT_EPS)


def sqrt_abs(u: Tensor) -> Tensor:
    """``sqrt(|u|)`` with a derivative bounded by ``1 / (2 SQRT_EPS)`` (finite at u = 0)."""
    return _SqrtAbs.apply(u)


Entries = list[list[Tensor]]


def _det_entries(m: Entries) -> Tensor:
    """Determinant of a small symbolic matrix whose entries are tensors of one shape.

    Laplace expansion along the first row: an explicit polynomial, so it has
    finite gradients everywhere (singular matrices included) and costs a few
    elementwise products for the sizes GRAM uses (n <= 4).
    """
    n = len(m)
    if n == 1:
        return m[0][0]
    if n == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    total = None
    for c in range(n):
        minor = [[row[k] for k in range(n) if k != c] for row in m[1:]]
        term = m[0][c] * _det_entries(minor)
        total = term if total is None else (total + term if c % 2 == 0 else total - term)
    assert total is not None  # n >= 3 here: the loop ran
    return total


def _adjugate_entries(m: Entries) -> Entries:
    """Adjugate (transposed cofactors) of a small symbolic matrix; valid when singular."""
    n = len(m)
    if n == 1:
        return [[torch.ones_like(m[0][0])]]
    adj: Entries = [[None] * n for _ in range(n)]  # type: ignore[list-item]
    for i in range(n):
        for j in range(n):
            # adj[i][j] = (-1)^(i+j) det(m without row j and column i)
            minor = [[m[r][c] for c in range(n) if c != i] for r in range(n) if r != j]
            cof = _det_entries(minor)
            adj[i][j] = cof if (i + j) % 2 == 0 else -cof
    return adj


def adjugate(m: Tensor) -> Tensor:
    """Adjugate of [..., n, n] (n <= 4 as polynomials), valid for singular matrices."""
    n = m.shape[-1]
    if n > 4:
        return torch.linalg.det(m)[..., None, None] * torch.linalg.inv(m)
    adj = _adjugate_entries([[m[..., i, j] for j in range(n)] for i in range(n)])
    return torch.stack([torch.stack(row, -1) for row in adj], -2)


def gram_determinant(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """``det G_ij`` for anchor rows i ([N_a, d]) and tuples j (k-1 tensors [N_t, d]) -> [N_a, N_t]."""
    if len(others) < 1:
        raise AudioclError("gram needs the anchor and at least one other modality")
    check_same_shape(others)
    if anchor.shape[1] != others[0].shape[1]:
        raise AudioclError(
            f"gram: anchor dim {anchor.shape[1]} != other modalities' dim {others[0].shape[1]}"
        )
    n = len(others)
    c = (anchor * anchor).sum(-1)  # [N_a]
    # one matmul against all other modalities at once (fewer, larger BLAS calls)
    n_t = others[0].shape[0]
    g_all = anchor @ torch.cat(list(others), 0).T  # [N_a, n * N_t]
    if n <= 4:
        # B_j's entries as [N_t] vectors; det and adjugate as explicit polynomials
        B: Entries = [[None] * n for _ in range(n)]  # type: ignore[list-item]
        for m in range(n):
            for k in range(m, n):
                B[m][k] = B[k][m] = (others[m] * others[k]).sum(-1)
        det_b = _det_entries(B)
        adj = _adjugate_entries(B)
    else:
        X = torch.stack(list(others), 1)  # [N_t, n, d]
        Bt = X @ X.transpose(1, 2)
        det_b = torch.linalg.det(Bt)
        A = adjugate(Bt)  # [N_t, n, n], symmetric
        # the quadratic form g^T adj g as one batched matmul over tuples: the
        # n(n+1)/2 elementwise [N_a, N_t] passes below cost far more for n >= 5
        G = g_all.view(g_all.shape[0], n, n_t).permute(2, 0, 1)  # [N_t, N_a, n]
        quad = ((G @ A) * G).sum(-1).T  # [N_a, N_t]
        return c[:, None] * det_b[None, :] - quad
    g = [g_all[:, m * n_t : (m + 1) * n_t] for m in range(n)]  # n x [N_a, N_t]
    det = c[:, None] * det_b[None, :]
    for m in range(n):
        det = det - adj[m][m][None, :] * g[m] * g[m]
        for k in range(m + 1, n):
            det = det - 2.0 * adj[m][k][None, :] * (g[m] * g[k])
    return det


class _Gram3Volume(torch.autograd.Function):
    """k = 3 volumes with a hand-written backward (fewer [N_a, N_t] passes than autograd).

    With c_i = |a_i|^2, b00_j = |v_j|^2, b11_j = |s_j|^2, b01_j = <v_j, s_j>,
    g0 = a v^T, g1 = a s^T::

        det = c (b00 b11 - b01^2) - (b11 g0^2 - 2 b01 g0 g1 + b00 g1^2),  V = sqrt(|det|)

    and with w = dL/dV * dV/ddet (the bounded sqrt derivative of ``sqrt_abs``)::

        dL/dg0 = -2 w (b11 g0 - b01 g1),   dL/dg1 = -2 w (b00 g1 - b01 g0)
        dL/dc_i = sum_j w_ij det(B_j)
        dL/db00_j = sum_i w_ij (c_i b11_j - g1_ij^2),  dL/db11_j = sum_i w_ij (c_i b00_j - g0_ij^2)
        dL/db01_j = sum_i w_ij (2 g0_ij g1_ij - 2 c_i b01_j)
    """

    @staticmethod
    def forward(ctx, a: Tensor, v: Tensor, s: Tensor) -> Tensor:
        # written as in-place passes over [N_a, N_t]: this function is memory-bound
        n_t = v.shape[0]
        c = (a * a).sum(-1)
        b00, b11, b01 = (v * v).sum(-1), (s * s).sum(-1), (v * s).sum(-1)
        det_b = b00 * b11 - b01 * b01
        vs = torch.cat([v, s], 0)
        g = a @ vs.T
        g0, g1 = g[:, :n_t], g[:, n_t:]
        det = torch.outer(c, det_b)
        tmp = torch.mul(g0, g0)
        det.addcmul_(tmp, b11, value=-1.0)
        torch.mul(g1, g1, out=tmp)
        det.addcmul_(tmp, b00, value=-1.0)
        torch.mul(g0, g1, out=tmp)
        det.addcmul_(tmp, b01, value=2.0)
        vol = det.abs().sqrt_()
        # dV/ddet with the bounded derivative of sqrt_abs
        dvdd = torch.sign(det, out=det).mul_(0.5).div_(torch.clamp_min(vol, SQRT_EPS, out=tmp))
        ctx.save_for_backward(a, vs, g, dvdd, c, b00, b11, b01, det_b)
        return vol

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, vs, g, dvdd, c, b00, b11, b01, det_b = ctx.saved_tensors
        n_t = vs.shape[0] // 2
        v, s = vs[:n_t], vs[n_t:]
        g0, g1 = g[:, :n_t], g[:, n_t:]
        w = grad * dvdd  # dL/ddet
        wg0, wg1 = w * g0, w * g1
        dg = torch.empty_like(g)
        dg0, dg1 = dg[:, :n_t], dg[:, n_t:]
        torch.mul(wg0, -2.0 * b11, out=dg0).addcmul_(wg1, 2.0 * b01)
        torch.mul(wg1, -2.0 * b00, out=dg1).addcmul_(wg0, 2.0 * b01)
        wc = w.T @ c  # [N_t]: sum_i w_ij c_i
        tmp = torch.mul(wg1, g1)
        d_b00 = wc * b11 - tmp.sum(0)
        torch.mul(wg0, g0, out=tmp)
        d_b11 = wc * b00 - tmp.sum(0)
        torch.mul(wg0, g1, out=tmp)
        d_b01 = 2.0 * tmp.sum(0) - 2.0 * wc * b01
        d_c = w @ det_b  # [N_a]
        da = (dg @ vs).add_(a * (2.0 * d_c)[:, None])
        dvs = dg.T @ a  # [2 N_t, d]
        dv = dvs[:n_t] + 2.0 * d_b00[:, None] * v + d_b01[:, None] * s
        ds = dvs[n_t:] + 2.0 * d_b11[:, None] * s + d_b01[:, None] * v
        return da, dv, ds


def gram_volume(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """``V_ij = sqrt(|det G_ij|)`` -> [N_a, N_t]; finite gradient at zero volume."""
    with no_autocast(anchor):  # determinants cancel badly in half precision
        anchor, others = upcast(anchor), [upcast(x) for x in others]
        if len(others) == 2 and anchor.shape[1] == others[0].shape[1]:
            check_same_shape(others)
            return _Gram3Volume.apply(anchor, others[0], others[1])
        return sqrt_abs(gram_determinant(anchor, others))


def gram_loss(
    anchor: Tensor,
    others: Sequence[Tensor],
    tau: Tensor | float = 0.07,
    *,
    label_smoothing: float = 0.1,
) -> Tensor:
    """``1/2 (CE(-V/tau, arange) + CE(-V^T/tau, arange))`` with label smoothing; 0-d.

    ``anchor`` [N, d], ``others`` k-1 tensors [N, d]; ``tau`` raw temperature.
    """
    check_same_shape([anchor, *others])
    V = gram_volume(anchor, others)
    logits = -V / tau
    labels = torch.arange(V.shape[0], device=V.device)
    return 0.5 * (
        F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, labels, label_smoothing=label_smoothing)
    )


class GramLoss(nn.Module):
    """GRAM volume loss; the first modality name is the anchor.

    ``tau=None`` uses ``1 / outputs["logit_scale"]`` (the model's learnable
    temperature); a float fixes tau. Embeddings are gathered over ranks with gradient.
    """

    def __init__(
        self, modalities: Sequence[str], tau: float | None = None, label_smoothing: float = 0.1
    ):
        super().__init__()
        if len(modalities) < 2:
            raise AudioclError("gram needs at least two modalities (anchor first)")
        self.modalities = tuple(modalities)
        self.tau = tau
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any] | None = None) -> Tensor:
        xs = D.gather_many(get_embeddings(outputs, self.modalities))
        tau = self.tau if self.tau is not None else 1.0 / get_logit_scale(outputs)
        return gram_loss(xs[0], xs[1:], tau, label_smoothing=self.label_smoothing)
