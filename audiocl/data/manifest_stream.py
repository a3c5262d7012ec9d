"""Training straight from an audiocl manifest: no feature store.

Any manifest works (``audiocl prepare folder|hf|lhotse|webdataset``): its items
point at files, tar members or arrow rows, and :func:`audiocl.data.sources.load_item_mono`
decodes each of them wherever it lives. The work is split as in
:mod:`audiocl.data.stream`:

* :class:`ManifestAudio` is a map-style dataset over the manifest's items:
  ``dataset[i]`` decodes item ``i`` at the front-end's rate (in a DataLoader
  worker when ``data.num_workers > 0``) and checks it as extraction does
  (:func:`~audiocl.data.stream.check_clip`);
* :class:`ManifestCollate` fits the batch's clips to the length policy with the
  stream's :func:`~audiocl.data.stream.fit_waveforms` (gather maps over frame
  indices, seeded by batch and id);
* :class:`ManifestFeatures` (a :class:`~audiocl.data.stream.DeviceFeatures`)
  computes the log-mel on the training device.

The batch order is the store route's: the trainer's
:class:`~audiocl.train.data.GlobalBatchSampler` over the items in manifest
order (a permutation of ``(seed, epoch)``, rank-sharded, resumed from the
checkpoint's ``(epoch, batch)``). So a store extracted from the same manifest
with the same front-end, trained with the same order, gives the same inputs.

**Decode failures** are found when the item's batch is made (nothing is
probed up front). With ``data.on_missing: error`` (the default) training stops
with one line naming the item id and its file, tar member or arrow row; with
``data.on_missing: skip`` the item is left out of its batch with a warning
(each time it comes up), as items that failed extraction are left out of a store.
"""

from __future__ import annotations

import sys
from typing import Any

from torch.utils.data import Dataset

from audiocl.data.stream import DeviceFeatures, fit_waveforms
from audiocl.errors import AudioclError

__all__ = ["ManifestAudio", "ManifestCollate", "ManifestFeatures"]


class ManifestAudio(Dataset):
    """The items of one manifest (read once, in order); ``self[i]`` decodes item ``i``.

    Returns ``{"id", "texts", "labels", "wav": float32[T]}`` at ``frontend.sample_rate``,
    or ``{"id", "error": one line}`` when the item cannot be used.
    """

    def __init__(self, path: str, frontend: Any, field: str = "data.stream_manifest") -> None:
        from audiocl.data.manifest import read_manifest

        self.path, self.fe, self.field = str(path), frontend, field
        try:
            self.items = list(read_manifest(path))
        except AudioclError as err:
            raise AudioclError(f"{field}: {err}") from None
        if not self.items:
            raise AudioclError(f"{field} {path}: the manifest has no items")
        self.ids = [it.id for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from audiocl.audio.io import AudioDecodeError
        from audiocl.data.sources import item_name, load_item_mono
        from audiocl.data.stream import check_clip

        it = self.items[index]
        try:
            wav = load_item_mono(it, int(self.fe.sample_rate))
            check_clip(wav, self.fe, item_name(it))
        except AudioDecodeError as err:
            return {"id": it.id, "error": f"item {it.id!r}: {err}"}
        except OSError as err:  # unreadable in a way the decoder does not classify
            return {"id": it.id, "error": f"item {it.id!r}: {item_name(it)}: {type(err).__name__}: {err}"}
        return {"id": it.id, "texts": list(it.texts), "labels": list(it.labels), "wav": wav}


class ManifestCollate:
    """Decoded items of one batch -> :func:`~audiocl.data.stream.fit_waveforms`'s batch,
    plus ``"_failed"``: the one-line errors of the items that could not be decoded
    (left for :class:`ManifestFeatures` to raise or warn in the trainer's process)."""

    def __init__(self, frontend: Any, max_frames: int | None, policy: str) -> None:
        self.fe, self.max_frames, self.policy = frontend, max_frames, policy

    def __call__(self, items: list[dict[str, Any]], seed: int) -> dict[str, Any]:
        ok = [d for d in items if "error" not in d]
        failed = [d["error"] for d in items if "error" in d]
        batch: dict[str, Any] = fit_waveforms(ok, self.fe, self.max_frames, self.policy, seed) if ok else {"ids": []}
        batch["_failed"] = failed
        return batch


class ManifestFeatures(DeviceFeatures):
    """:class:`~audiocl.data.stream.DeviceFeatures` that first applies ``data.on_missing``
    to the batch's failed items: ``error`` raises one line, ``skip`` warns."""

    def __init__(self, frontend: Any, field: str, path: str, on_missing: str) -> None:
        super().__init__(frontend)
        self.field, self.path, self.on_missing = field, path, on_missing

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        failed = batch.pop("_failed", [])
        if failed and self.on_missing != "skip":
            raise AudioclError(
                f"{self.field} {self.path}: {failed[0]} (set data.on_missing=skip to train without "
                "the items that fail to decode)"
            )
        for msg in failed:
            print(f"warning: {self.field} {self.path}: {msg}; left out of its batch", file=sys.stderr, flush=True)
        if not batch["ids"]:
            raise AudioclError(f"{self.field} {self.path}: every item of a batch failed to decode ({failed[0]}, ...)")
        return super().__call__(batch)
