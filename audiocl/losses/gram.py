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
tuple (N_t small determinants, exact polynomials for k-1 <= 4, LU beyond), and
the [N_a, N_t] volumes need k-1 matmuls plus O(k^2) elementwise products: no
[N_a, N_t, k, k] stack and no batched LU. For unit vectors and k = 3 this is
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
from audiocl.losses._common import check_same_shape, get_embeddings, get_logit_scale

#: volumes below this get a bounded derivative (see module docstring).
SQRT_EPS = 1e-6


class _SqrtAbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:  # type: ignore[override]
        y = u.abs().sqrt()
        ctx.save_for_backward(u, y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        u, y = ctx.saved_tensors
        return g * torch.sign(u) * 0.5 / y.clamp_min(SQRT_EPS)


def sqrt_abs(u: Tensor) -> Tensor:
    """``sqrt(|u|)`` with a derivative bounded by ``1 / (2 SQRT_EPS)`` (finite at u = 0)."""
    return _SqrtAbs.apply(u)


def small_det(m: Tensor) -> Tensor:
    """Determinant of [..., n, n] as an explicit polynomial for n <= 4 (LU beyond).

    The polynomial form has finite gradients everywhere, singular matrices included.
    """
    n = m.shape[-1]
    if n == 0:
        return m.new_ones(m.shape[:-2])
    if n == 1:
        return m[..., 0, 0]
    if n == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if n <= 4:
        # Laplace expansion along the first row.
        total = m.new_zeros(m.shape[:-2])
        for c in range(n):
            keep = [k for k in range(n) if k != c]
            minor = m[..., 1:, :][..., keep]
            term = m[..., 0, c] * small_det(minor)
            total = total + term if c % 2 == 0 else total - term
        return total
    return torch.linalg.det(m)


def adjugate(m: Tensor) -> Tensor:
    """Adjugate (transposed cofactor matrix) of [..., n, n], valid for singular matrices."""
    n = m.shape[-1]
    if n == 1:
        return torch.ones_like(m)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            # adj[i, j] = (-1)^(i+j) * det(m without row j and column i)
            ri = [k for k in range(n) if k != j]
            ci = [k for k in range(n) if k != i]
            minor = m[..., ri, :][..., ci]
            cof = small_det(minor)
            row.append(cof if (i + j) % 2 == 0 else -cof)
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


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
    X = torch.stack(list(others), 1)  # [N_t, n, d]
    B = X @ X.transpose(1, 2)  # [N_t, n, n]
    det_b = small_det(B)  # [N_t]
    adj = adjugate(B)  # [N_t, n, n]
    g = [anchor @ x.T for x in others]  # n x [N_a, N_t]
    det = c[:, None] * det_b[None, :]
    for m in range(n):
        det = det - adj[:, m, m][None, :] * g[m] * g[m]
        for k in range(m + 1, n):
            det = det - 2.0 * adj[:, m, k][None, :] * g[m] * g[k]
    return det


def gram_volume(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """``V_ij = sqrt(|det G_ij|)`` -> [N_a, N_t]; finite gradient at zero volume."""
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
