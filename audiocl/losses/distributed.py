"""Gathering embeddings across ranks with gradient, written once for every loss.

``gather_with_grad(x)`` concatenates the local ``x`` ([n_r, ...] on rank r) of all
ranks in rank order into ``[N, ...]`` with ``N = sum_r n_r`` (ranks may hold
different batch sizes). Without an initialised process group (or with one rank)
it is the identity, so the same loss code runs in one process.

Gradient scaling, and why DDP then matches one process
-------------------------------------------------------
Every loss gathers all its embeddings and computes the *global* loss ``L`` on
the concatenated batch, identically on every rank. In the backward of the
gather, each rank holds ``dL/dX`` for the full ``X``; we **sum** this over ranks
(``all_reduce(SUM)``) and return the slice of the local rows. Since every rank
computed the same ``L``, rank r receives ``W * dL/dx_r`` (W = world size). DDP
then *averages* parameter gradients over ranks::

    (1/W) * sum_r (W * dL/dx_r) * dx_r/dtheta = dL/dtheta

which is the gradient of one process on the concatenated batch. Parameters
used directly by the loss (the temperature, the bias) get ``dL/dt`` on every
rank, and the DDP average of W equal values is again ``dL/dt``.

The same sum also makes "local" losses right: if rank r computes only its own
rows ``L_r`` with ``(1/W) sum_r L_r = L``, the summed gather gradient gives
``sum_s dL_s/dx_r`` on rank r and the DDP average is again ``dL/dtheta``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        sizes = _gather_sizes(x.shape[0], x.device)
        n_max = max(sizes)
        xc = x.contiguous()
        if x.shape[0] < n_max:
            pad = xc.new_zeros((n_max - x.shape[0], *x.shape[1:]))
            xc = torch.cat([xc, pad], 0)
        parts = [torch.empty_like(xc) for _ in sizes]
        dist.all_gather(parts, xc)
        r = dist.get_rank()
        ctx.offset = sum(sizes[:r])
        ctx.n = x.shape[0]
        return torch.cat([p[:s] for p, s in zip(parts, sizes)], 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.offset : ctx.offset + ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks in rank order, keeping the gradient path.

    Shapes: ``x`` [n_r, ...] on rank r -> ``[sum_r n_r, ...]``. Identity when not
    distributed. See the module docstring for how the gradient is scaled.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def gather_many(xs: list[Tensor]) -> list[Tensor]:
    """``gather_with_grad`` applied to each tensor of a list."""
    return [gather_with_grad(x) for x in xs]


def local_offset(n_local: int, device: torch.device | None = None) -> tuple[int, int]:
    """(offset of this rank's rows in the gathered batch, total rows N)."""
    if not is_distributed():
        return 0, n_local
    sizes = _gather_sizes(n_local, device or torch.device("cpu"))
    return sum(sizes[: dist.get_rank()]), sum(sizes)


def broadcast_from_rank0(x: Tensor) -> Tensor:
    """Make every rank use rank 0's tensor (e.g. random permutations); identity when local."""
    if not is_distributed():
        return x
    x = x.contiguous().clone()
    dist.broadcast(x, src=0)
    return x
