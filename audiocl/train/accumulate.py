"""One optimisation step's forward/backward, with or without gradient caching.

Contrastive losses couple every pair in the batch, so ordinary gradient
accumulation (sum of per-micro-batch losses) is NOT the loss of the large
batch: each micro-batch would only see its own negatives. Gradient caching
(Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", 2021) keeps the whole batch in the loss:

1. forward every micro-batch without autograd and keep only its outputs
   (embeddings ``[m, d]`` per tower, plus batch-independent scalars such as
   ``logit_scale``);
2. concatenate to ``[B, d]``, make these leaves that require grad, compute the
   loss over the full batch and back-propagate it to the embeddings only,
   giving ``g = dL/de`` (``[B, d]``) and ``dL/dscale``;
3. re-forward each micro-batch with autograd and back-propagate the surrogate
   ``sum(e_k * g_k)`` (plus ``scale * dL/dscale`` once), which by the chain
   rule accumulates exactly ``dL/dtheta`` in ``.grad``.

Two subtleties, and the choices made here:

* RNG (dropout, random masking): the torch CPU and CUDA RNG states are saved
  before each micro-batch's first forward and restored before its second, so
  both forwards draw the same masks and the cached embeddings are the ones
  whose graph is rebuilt. After the last re-forward the RNG is where a plain
  run of the same micro-batches would leave it.
* BatchNorm running statistics (and any other buffer a forward mutates) would
  be updated twice, once per forward. All module buffers are snapshotted
  before step 1 and restored after it, so only the step-3 forwards update
  them: each micro-batch updates them once, exactly like plain accumulation.
  Batch statistics themselves are per micro-batch (inherent to chunking);
  models whose towers use BatchNorm therefore see micro-batch statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from audiocl.models.embed import device_of

__all__ = ["StepOutput", "batch_size_of", "forward_backward", "slice_inputs"]


def batch_size_of(inputs: Any) -> int:
    """Number of items in a model-input structure (first tensor/list found)."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    if isinstance(inputs, dict):
        for value in inputs.values():
            if value is None:
                continue
            return batch_size_of(value)
    raise ValueError(f"cannot find a batch dimension in {type(inputs).__name__}")


def slice_inputs(inputs: Any, start: int, end: int) -> Any:
    """Slice every tensor (dim 0) and list in a nested input structure."""
    if isinstance(inputs, Tensor):
        return inputs[start:end] if inputs.dim() > 0 else inputs
    if isinstance(inputs, list):
        return inputs[start:end]
    if isinstance(inputs, tuple):
        return tuple(slice_inputs(v, start, end) for v in inputs)
    if isinstance(inputs, dict):
        return {k: slice_inputs(v, start, end) for k, v in inputs.items()}
    return inputs


def _leaves(obj: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Tensor]]:
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, prefix + (i,))


def _rebuild(obj: Any, values: dict[tuple, Any], prefix: tuple = ()) -> Any:
    if isinstance(obj, Tensor):
        return values[prefix]
    if isinstance(obj, dict):
        return {k: _rebuild(v, values, prefix + (k,)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebuild(v, values, prefix + (i,)) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_rebuild(v, values, prefix + (i,)) for i, v in enumerate(obj))
    return obj


def _is_per_item(path: tuple, tensor: Tensor, n: int) -> bool:
    # embeddings (and any other [n, ...] output) are split across micro-batches;
    # 0-d outputs (logit_scale, logit_bias) are properties of the model
    return tensor.dim() > 0 and tensor.shape[0] == n


@dataclass
class StepOutput:
    loss: Tensor  # detached full-batch loss
    terms: dict[str, float] = field(default_factory=dict)
    outputs: Any = None  # detached full-batch outputs (embeddings) for logging


def _cast_float(obj: Any) -> Any:
    # bf16/fp16 outputs of autocast -> float32 for the loss; float64 stays float64
    values = {
        p: (t.float() if t.is_floating_point() and t.element_size() < 4 else t)
        for p, t in _leaves(obj)
    }
    return _rebuild(obj, values)


class _RngState:
    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def forward_backward(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: dict[str, Any],
    batch: Any,
    *,
    micro_batch_size: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: torch.device | None = None,
    loss_scale: float = 1.0,
) -> StepOutput:
    """Forward + backward for one (local) batch; gradients accumulate in ``.grad``.

    ``loss_fn(outputs, batch)`` returns a scalar over the whole batch (with a
    distributed loss, over the global batch gathered across ranks).
    ``micro_batch_size`` below the batch size switches on gradient caching.
    ``no_sync`` (DDP's ``model.no_sync``) suppresses the gradient all-reduce
    on all but the last micro-batch. The loss is computed in float32 even
    under bf16 autocast. If the loss is not finite nothing is back-propagated
    and the returned loss is that non-finite value.
    """
    n = batch_size_of(inputs)
    device = device or device_of(model)
    if micro_batch_size is None or micro_batch_size >= n:
        with autocast():
            outputs = model(inputs)
        outputs = _cast_float(outputs)
        loss = loss_fn(outputs, batch)
        if torch.isfinite(loss):
            (loss * loss_scale).backward()
        return StepOutput(loss=loss.detach(), outputs=_detach(outputs))

    bounds = [(s, min(s + micro_batch_size, n)) for s in range(0, n, micro_batch_size)]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng_states: list[_RngState] = []
    cached: list[Any] = []
    with torch.no_grad():
        for s, e in bounds:
            rng_states.append(_RngState(device))
            with autocast():
                out = model(slice_inputs(inputs, s, e))
            cached.append(_cast_float(out))
    # undo the first pass's buffer updates (BatchNorm running stats)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])

    # full-batch outputs as leaves that require grad
    template = cached[0]
    full: dict[tuple, Tensor] = {}
    per_item: dict[tuple, bool] = {}
    first_leaves = dict(_leaves(template))
    for path, t0 in first_leaves.items():
        chunk_n = bounds[0][1] - bounds[0][0]
        per_item[path] = _is_per_item(path, t0, chunk_n)
        if per_item[path]:
            parts = [dict(_leaves(c))[path] for c in cached]
            value = torch.cat(parts, dim=0)
        else:
            value = t0
        if value.is_floating_point():
            value = value.detach().requires_grad_(True)
        full[path] = value
    full_outputs = _rebuild(template, full)
    loss = loss_fn(full_outputs, batch)
    if not torch.isfinite(loss):
        return StepOutput(loss=loss.detach(), outputs=_detach(full_outputs))
    grads_list = torch.autograd.grad(
        loss * loss_scale,
        [t for t in full.values() if t.requires_grad],
        allow_unused=True,
    )
    grads = dict(zip([p for p, t in full.items() if t.requires_grad], grads_list))

    last = len(bounds) - 1
    for k, (s, e) in enumerate(bounds):
        ctx = no_sync() if (no_sync is not None and k < last) else contextlib.nullcontext()
        with ctx:
            rng_states[k].restore()
            with autocast():
                out = model(slice_inputs(inputs, s, e))
            out = _cast_float(out)
            terms: list[Tensor] = []
            for path, t in _leaves(out):
                g = grads.get(path)
                if g is None or not t.requires_grad:
                    continue
                if per_item[path]:
                    terms.append((t * g[s:e]).sum())
                elif k == last:
                    # batch-independent outputs (logit_scale) get their gradient
                    # once, on the synchronised pass, so DDP sees them used there
                    terms.append((t * g).sum())
            if terms:
                torch.stack(terms).sum().backward()
    return StepOutput(loss=loss.detach(), outputs=_detach(full_outputs))


def _detach(obj: Any) -> Any:
    return _rebuild(obj, {p: t.detach() for p, t in _leaves(obj)})
