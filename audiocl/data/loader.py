"""Training-side reading of a feature store: Dataset, shard-aware sampler, collate.

* :class:`FeatureDataset` yields ``{"id", "features": Tensor[frames, n_mels],
  "texts", "labels", ...}``; features come from the store's memory maps, texts,
  labels and every other manifest field are joined by id.
* :class:`ShardShuffleSampler` shuffles across shards, deterministically per
  (seed, epoch), and can resume from a position inside an epoch.
* :func:`collate_features` stacks variable-length items, applying a length policy
  when ``max_frames`` is given, and returns the valid lengths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audiocl.audio.frontend import log_floor
from audiocl.audio.length import fit_clip
from audiocl.data.store import FeatureStore
from audiocl.errors import AudioclError

__all__ = ["FeatureDataset", "ShardShuffleSampler", "collate_features", "log_floor"]

#: manifest fields copied into each example (besides ``texts`` and ``labels``)
_EXTRA_FIELDS = ("split", "language", "speaker", "source", "duration")


class FeatureDataset(Dataset):
    """A torch Dataset over a feature store, optionally joined with a manifest.

    ``ids`` restricts (and orders) the items; by default every item of the store,
    or, with a manifest, every manifest item that is in the store (items that
    failed extraction are left out, and counted in :attr:`missing`).
    ``fields`` names extra manifest fields (top-level or custom) to carry along.
    ``kind="waveform"`` reads the store's resampled waveforms instead (for
    waveform-input towers): ``features`` is then ``Tensor[samples]`` and
    :func:`collate_features` pads with zeros and counts ``max_frames`` in samples.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike | FeatureStore,
        manifest: str | os.PathLike | None = None,
        ids: Sequence[str] | None = None,
        *,
        fields: Sequence[str] = (),
        split: str | None = None,
        kind: str = "logmel",
    ) -> None:
        self.store = store_dir if isinstance(store_dir, FeatureStore) else FeatureStore(store_dir)
        if kind not in ("logmel", "waveform"):
            raise AudioclError(f"kind must be 'logmel' or 'waveform', not {kind!r}")
        if kind not in self.store.kinds:
            raise AudioclError(
                f"store at {self.store.dir} holds no {kind} (it holds {', '.join(self.store.kinds)})"
            )
        self.kind = kind
        self._pad = log_floor(self.store.config) if kind == "logmel" else 0.0
        self.meta: dict[str, dict[str, Any]] = {}
        self.missing: list[str] = []
        self.fields = tuple(fields)
        if manifest is not None:
            from audiocl.data.manifest import read_manifest

            wanted = None if ids is None else set(ids)
            order = []
            for item in read_manifest(Path(manifest)):
                if wanted is not None and item.id not in wanted:
                    continue
                if split is not None and item.split != split:
                    continue
                if item.id not in self.store:
                    self.missing.append(item.id)
                    continue
                meta = {"texts": list(item.texts), "labels": list(item.labels)}
                for name in _EXTRA_FIELDS:
                    meta[name] = getattr(item, name)
                for name in self.fields:
                    meta[name] = getattr(item, name, None) if name not in item.custom else item.custom[name]
                self.meta[item.id] = meta
                order.append(item.id)
            if ids is not None:
                absent = [i for i in ids if i not in self.meta]
                if absent:
                    raise AudioclError(
                        f"{len(absent)} requested id(s) are not in both the manifest and the "
                        f"store (first {absent[0]!r})"
                    )
                order = list(ids)
            self._ids = order
        else:
            if split is not None:
                raise AudioclError("selecting a split needs the manifest (manifest=...)")
            if ids is None:
                self._ids = self.store.ids()
            else:
                absent = [i for i in ids if i not in self.store]
                if absent:
                    raise AudioclError(
                        f"{len(absent)} requested id(s) are not in the store at "
                        f"{self.store.dir} (first {absent[0]!r})"
                    )
                self._ids = list(ids)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def pad_value(self) -> float:
        """The store's log floor: what to pad log-mels with (see :func:`collate_features`)."""
        return self._pad

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def shards(self) -> np.ndarray:
        """Shard number of each example, in dataset order (for :class:`ShardShuffleSampler`)."""
        return np.asarray([self.store.shard_of(i) for i in self._ids], dtype=np.int64)

    def num_frames(self) -> np.ndarray:
        """Frames (samples for ``kind="waveform"``) of each example, in dataset order."""
        get = self.store.num_samples if self.kind == "waveform" else self.store.num_frames
        return np.asarray([get(i) for i in self._ids], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id = self._ids[index]
        # a copy: memmap slices are read-only and torch wants writable memory
        if self.kind == "waveform":
            feats = torch.from_numpy(self.store.waveform(item_id))
        else:
            feats = torch.from_numpy(np.array(self.store[item_id], dtype=np.float32))
        # the store's log floor travels with the example so that collate pads with
        # the right value without being told which front-end made the store
        out: dict[str, Any] = {"id": item_id, "features": feats, "_pad_value": self._pad}
        meta = self.meta.get(item_id)
        if meta is None:
            out["texts"] = []
            out["labels"] = []
        else:
            out.update(meta)
        return out


class ShardShuffleSampler(Sampler[int]):
    """Deterministic shuffling across shards, resumable within an epoch.

    Per epoch (seeded by ``seed`` and the epoch number) the shard order is
    permuted; shards are then taken ``window`` at a time and the items of each
    window are permuted together. ``window=None`` permutes all items at once (a
    global shuffle); a small window keeps reads local to a few shards' pages
    while still mixing items across shards. With ``num_replicas > 1`` each rank
    takes every ``num_replicas``-th index of the same permutation (padded by
    wrapping so all ranks get equally many). ``start`` (or
    :meth:`load_state_dict`) skips the first indices of this rank's epoch, to
    resume mid-epoch.
    """

    def __init__(
        self,
        shards: Sequence[int] | np.ndarray,
        *,
        seed: int = 0,
        window: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.shards = np.asarray(shards, dtype=np.int64)
        if window is not None and window < 1:
            raise AudioclError(f"shuffle window must be >= 1 shard, not {window}")
        if not 0 <= rank < num_replicas:
            raise AudioclError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.seed = int(seed)
        self.window = window
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def state_dict(self, position: int) -> dict[str, int]:
        """State to resume after ``position`` indices of this epoch were consumed."""
        return {"seed": self.seed, "epoch": self.epoch, "position": int(position)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise AudioclError(
                f"sampler state was saved with seed {state['seed']}, this sampler has {self.seed}"
            )
        self.epoch = int(state["epoch"])
        self.start = int(state["position"])

    def permutation(self) -> np.ndarray:
        """The full (all ranks) order of this epoch."""
        n = len(self.shards)
        rng = np.random.default_rng([self.seed, self.epoch])
        uniq = np.unique(self.shards)
        shard_order = rng.permutation(uniq)
        if self.window is None:
            return rng.permutation(n)
        # group item indices by shard once (stable), then walk windows of shards
        by_shard = {s: np.flatnonzero(self.shards == s) for s in uniq.tolist()}
        parts = []
        for w in range(0, len(shard_order), self.window):
            members = np.concatenate([by_shard[s] for s in shard_order[w : w + self.window].tolist()])
            parts.append(rng.permutation(members))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _rank_indices(self) -> np.ndarray:
        perm = self.permutation()
        if self.num_replicas == 1:
            return perm
        n = len(perm)
        if self.drop_last:
            per = n // self.num_replicas
            perm = perm[: per * self.num_replicas]
        else:
            per = -(-n // self.num_replicas)
            pad = per * self.num_replicas - n
            if pad and n:
                perm = np.concatenate([perm, np.resize(perm, pad)])
        return perm[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        idx = self._rank_indices()
        return iter(idx[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, len(self._rank_indices()) - self.start)


def collate_features(
    batch: Sequence[dict[str, Any]],
    max_frames: int | None = None,
    policy: str = "repeatpad",
    seed: int = 0,
    pad_value: float | None = None,
) -> dict[str, Any]:
    """Stack examples of :class:`FeatureDataset` into a batch.

    Without ``max_frames``, every item is padded with ``pad_value`` to the longest
    in the batch (``policy`` is not used). With ``max_frames``, each item is
    brought to exactly ``max_frames`` frames by ``policy`` (pad, repeat,
    repeatpad, trunc, rand_trunc, or "<pad>+<trunc>" such as
    "repeatpad+rand_trunc"; see :mod:`audiocl.audio.length`); rand_trunc crops
    are seeded by ``seed`` and the item id, so an item gets the same crop in any
    batch and any worker. ``pad_value`` defaults to the store's log floor, which
    :class:`FeatureDataset` examples carry (``_pad_value``; -100 dB for
    ``laion_clap``), else -100.

    Waveform examples (``Tensor[samples]``) work the same way, counted in samples.

    Fitting and valid lengths follow the one clip rule,
    :func:`audiocl.audio.length.fit_clip` (padding is not signal: repeatpad
    counts its whole copies, pad the clip itself), the same rule the store and
    file embedding paths use.

    Returns ``{"ids": list[str], "features": Tensor[B, frames, n_mels],
    "lengths": LongTensor[B] (frames holding signal, not padding),
    "texts": list[list[str]], "labels": list[list[str]], ...}``; any other key
    of the examples is gathered into a list.
    """
    if not batch:
        raise ValueError("collate_features got an empty batch")
    if pad_value is None:
        pad_value = float(batch[0].get("_pad_value", -100.0))
    feats = [b["features"] for b in batch]
    rest = tuple(feats[0].shape[1:])  # (n_mels,) for log-mels, () for waveforms
    if max_frames is None:
        T = max(int(f.shape[0]) for f in feats)
        out = torch.full((len(batch), T, *rest), float(pad_value), dtype=feats[0].dtype)
        lengths = torch.zeros(len(batch), dtype=torch.long)
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
            lengths[i] = f.shape[0]
    else:
        if max_frames < 1:
            raise AudioclError(f"max_frames must be >= 1, not {max_frames}")
        rows = []
        lengths = torch.zeros(len(batch), dtype=torch.long)
        for i, (b, f) in enumerate(zip(batch, feats)):
            arr = f.numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
            # waveforms (1-D) pad with zeros, the silence; log-mels with the log floor
            piece = fit_clip(arr, max_frames, policy, seed=seed, key=str(b["id"]),
                             pad_value=0.0 if arr.ndim == 1 else pad_value)
            rows.append(torch.as_tensor(np.ascontiguousarray(piece.x)))
            lengths[i] = piece.length
        out = torch.stack(rows)
    result: dict[str, Any] = {"ids": [b["id"] for b in batch], "features": out, "lengths": lengths}
    for key in batch[0]:
        if key in ("id", "features") or key.startswith("_"):
            continue
        result[key] = [b.get(key) for b in batch]
    result.setdefault("texts", [[] for _ in batch])
    result.setdefault("labels", [[] for _ in batch])
    return result
