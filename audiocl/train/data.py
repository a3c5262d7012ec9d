"""Batches for the trainer: a resumable, rank-sharded batch sampler and seeded collation.

Determinism is by construction rather than by saved iterator state: the
order of epoch ``e`` is a permutation drawn from ``(seed, e)``, global batch
``b`` is the slice ``[b*B, (b+1)*B)`` of it, and rank ``r`` of ``W`` takes the
contiguous ``r``-th part of that slice, so the ranks' local batches
concatenated in rank order are exactly the single-process batch. Every
random choice made while building a batch (length-policy crops, which
caption of several) is seeded from ``(seed, epoch, batch, rank)``, so it does
not depend on DataLoader worker processes or on where a run was resumed.
The data position saved in a checkpoint is therefore just ``(epoch, batch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["GlobalBatchSampler", "SeededCollate", "SeededDataset", "TrainData", "batch_seed", "item_rng"]


def item_rng(key: tuple[int, ...], item_id: Any) -> np.random.Generator:
    """Generator for one item's random choices, from the batch key and the item id."""
    import zlib

    return np.random.default_rng([*key, zlib.crc32(str(item_id).encode())])


def batch_seed(seed: int, epoch: int, batch: int, rank: int, stream: int = 0) -> int:
    """A 32-bit seed that depends on all its arguments (numpy SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank, stream]).generate_state(1)[0])


class GlobalBatchSampler:
    """Yields this rank's part of each global batch, as ``[(index, batch_seed), ...]``.

    ``len(self)`` is the number of global batches (= optimiser steps) per epoch.
    ``set_epoch(e)`` picks the permutation, ``set_start(b)`` skips the first
    ``b`` batches of the epoch (resume mid-epoch without reading them).
    """

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        order: Callable[[int, int], Sequence[int]] | None = None,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by {world_size} workers")
        self.n = num_items
        self.B = global_batch
        self.rank, self.world = rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.order = order
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch: int) -> None:
        self.start = batch

    def __len__(self) -> int:
        return self.n // self.B if self.drop_last else -(-self.n // self.B)

    def permutation(self) -> np.ndarray:
        if self.order is not None:
            return np.asarray(self.order(self.epoch, self.seed), dtype=np.int64)
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation()
        for b in range(self.start, len(self)):
            chunk = perm[b * self.B : (b + 1) * self.B]
            # contiguous split so that rank order == single-process order; a
            # short last batch is split as evenly as possible (sizes differ by
            # at most one, never zero while it has at least `world` items)
            mine = np.array_split(chunk, self.world)[self.rank]
            # rank-independent: collation seeds each item by (seed, id), so the
            # ranks' crops equal the single-process ones
            s = batch_seed(self.seed, self.epoch, b, 0)
            yield [(int(i), s) for i in mine]


class SeededDataset(Dataset):
    """Wraps a dataset so the sampler's ``(index, seed)`` pairs pass the seed through."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        index, seed = key
        return self.dataset[index], seed


class SeededCollate:
    """Calls ``collate(items, seed)`` with the batch's seed (picklable for workers)."""

    def __init__(self, collate: Callable[[list[Any], int], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, pairs: list[tuple[Any, int]]) -> dict[str, Any]:
        items = [p[0] for p in pairs]
        seed = pairs[0][1] if pairs else 0
        batch = self.collate(items, seed)
        batch["_seed"] = seed
        return batch


@dataclass
class TrainData:
    """What the loop needs to make batches and model inputs from them.

    ``collate(items, seed)`` builds a batch dict from dataset items;
    ``to_inputs(batch, key)`` maps it to the model's input dict
    (tower name -> tensor / list of strings); ``key = (seed, epoch, batch)``
    seeds random choices (caption sampling) per item, so they do not depend
    on how a global batch is split over ranks.

    Streamed data (:mod:`audiocl.data.stream`) sets ``stream`` (the source:
    the loop asks it for a sampler and batches instead of indexing
    ``dataset``) and ``prepare(batch)``, which the loop calls on the batch
    once it is on the training device, before ``to_inputs`` (the log-mel is
    computed there).
    """

    dataset: Any
    collate: Callable[[list[Any], int], dict[str, Any]]
    to_inputs: Callable[[dict[str, Any], tuple[int, int, int]], dict[str, Any]]
    order: Callable[[int, int], Sequence[int]] | None = None
    stream: Any = None
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    if isinstance(obj, list) and obj and isinstance(obj[0], torch.Tensor):
        return [to_device(v, device) for v in obj]
    return obj
