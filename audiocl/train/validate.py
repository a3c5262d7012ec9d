"""Validation during training: mean validation loss and text-match R@1.

:func:`validate` runs the model over the validation set (each rank its part,
results gathered), :func:`text_match_r1` scores the embeddings with the
pessimistic tie rule of :mod:`audiocl.eval.metrics`, so the R@1 that picks the
best checkpoint is the one ``audiocl eval`` reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from audiocl.eval.metrics import topk_accuracy
from audiocl.train.data import GlobalBatchSampler, TrainData, to_device

__all__ = ["text_match_r1", "validate"]


def _label_scores(sim: Tensor, codes: Tensor, n_labels: int) -> Tensor:
    """``out[q, l] = max_{g : codes[g] = l} sim[q, g]``; ``sim`` ``[Q, G]`` -> ``[Q, L]``."""
    out = torch.full((sim.shape[0], n_labels), float("-inf"), dtype=sim.dtype)
    return out.scatter_reduce(1, codes[None, :].expand_as(sim), sim, reduce="amax")


def text_match_r1(a: Tensor, t: Tensor, labels: Sequence[str]) -> tuple[float, float]:
    """R@1 both ways between paired embeddings ``a`` ``[N, D]`` and ``t`` ``[N, D]``.

    A query is a hit when an item with its own label (its text string: duplicate
    captions such as class names all count) scores strictly above every item with
    another label; a tie with another label counts against it (pessimistic, as in
    :func:`audiocl.eval.metrics.ranks_from_similarity`). Computed as top-1 accuracy
    over the per-label maximum score ``s[q, l] = max_{g: label_g = l} a_q . t_g``,
    which has the same hits and needs ``[N, L]`` memory, not ``[N, N, P]``.
    Returns ``(a->t, t->a)``.
    """
    index: dict[str, int] = {}
    codes = torch.tensor([index.setdefault(x, len(index)) for x in labels], dtype=torch.long)
    sim = a.float() @ t.float().T  # [N, N]
    a2t = topk_accuracy(_label_scores(sim, codes, len(index)), codes, 1)
    t2a = topk_accuracy(_label_scores(sim.T.contiguous(), codes, len(index)), codes, 1)
    return a2t, t2a


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: TrainData,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world: int,
    make_loader: Callable[[TrainData, Any], Any],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> dict[str, float]:
    """Mean validation loss and text-match R@1 between the first two towers.

    ``val_loss`` is the item-weighted mean of the per-batch losses over the whole
    set (all ranks). R@1 (see :func:`text_match_r1`) pairs the first tower with
    the tower fed text strings (else the second tower; items without text are
    labelled by position, so only their own pair is a hit): ``val_r1_<a>_to_<t>``,
    ``val_r1_<t>_to_<a>`` and their mean ``val_r1``.
    """
    model.eval()
    distributed = world > 1
    n = len(data.dataset)
    loader: Any
    if data.stream is not None:
        loader = data.stream.eval_batches(batch_size, rank=rank, world=world, seed=seed, collate=data.collate)
    else:
        sampler = GlobalBatchSampler(n, batch_size, rank=rank, world_size=world, seed=seed, shuffle=False, drop_last=False)
        if distributed and n % batch_size and n % batch_size < world:
            sampler.drop_last = True
        loader = make_loader(data, sampler)
    tot, count = 0.0, 0
    embs: dict[str, list[Tensor]] = {}
    texts: list[str] = []
    text_tower = None
    for batch in loader:
        if data.prepare is not None:
            batch = data.prepare(to_device(batch, device))
        inputs = data.to_inputs(batch, (0, 0, 0))
        with autocast():
            outputs = model(to_device(inputs, device))
        outputs = {**outputs, "embeddings": {k: v.float() for k, v in outputs["embeddings"].items()}}
        loss = loss_fn(outputs, to_device(batch, device))
        m = next(iter(outputs["embeddings"].values())).shape[0]
        tot += float(loss) * m
        count += m
        for k, v in outputs["embeddings"].items():
            embs.setdefault(k, []).append(v.cpu())
        for k, v in inputs.items():
            if isinstance(v, list) and v and isinstance(v[0], str):
                text_tower = k
                texts.extend(v)
                break
    metrics: dict[str, float] = {}
    stats = torch.tensor([tot, count], dtype=torch.float64)
    if distributed:
        dist.all_reduce(stats)
    metrics["val_loss"] = float(stats[0] / max(stats[1], 1))
    names = list(embs)
    # R@1 pairs row i with row i: not when the captions come in blocks or sets
    # (data.hard_negatives, data.caption_sampling=all)
    if len(names) >= 2 and len({sum(x.shape[0] for x in v) for v in embs.values()}) == 1:
        local = {k: torch.cat(v) for k, v in embs.items()}
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (local, texts))
            local = {k: torch.cat([g[0][k] for g in gathered]) for k in names}
            texts = [t for g in gathered for t in g[1]]
        other = text_tower if text_tower in names else names[1]
        anchor = names[0] if names[0] != other else names[1]
        a, t = local[anchor], local[other]
        labels = texts if len(texts) == len(a) else [str(i) for i in range(len(a))]
        a2t, t2a = text_match_r1(a, t, labels)
        metrics[f"val_r1_{anchor}_to_{other}"] = a2t
        metrics[f"val_r1_{other}_to_{anchor}"] = t2a
        metrics["val_r1"] = (a2t + t2a) / 2
    return metrics
