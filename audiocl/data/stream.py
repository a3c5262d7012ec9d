"""Training straight from WebDataset shards (the LAION-Audio layout): no feature store.

A shard is a tar of samples, each a few members sharing a key: ``<key>.flac``
(or ``.wav``/``.mp3``/``.ogg``) and ``<key>.json`` with ``text`` (a caption or a
list of them), ``tag`` (labels) and optionally ``id`` (what
``audiocl export webdataset`` writes; else the key is the id). ``sizes.json``
beside the tars (tar name -> samples) gives the epoch length; shards it does
not list are counted by reading their tar headers.

The work is split in two so that a GPU trainer is not bound by CPU front-ends:

* DataLoader workers (CPU) read tar members sequentially (stdlib ``tarfile``
  streaming), shuffle raw samples, decode and resample them
  (:func:`audiocl.audio.io.load_mono`) and decide each clip's length policy
  with the library's :func:`audiocl.audio.length.fit_clip` applied to the
  clip's frame *indices*: the result is a gather map ``frame_index[B, F]``
  (``-1`` = padding) and the valid ``lengths``, the very crop, tiling and
  padding the store route takes from the same ``(seed, epoch, batch, id)``.
* :class:`DeviceFeatures` then runs on the training device: the torch
  :class:`~audiocl.audio.frontend.LogMel` of each whole clip (as extraction
  does), gathered through the map and padded with the log floor. So the model
  gets the inputs a store made with the same front-end would give it.

**Order** (all deterministic, a function of ``train.seed``, the epoch and the
layout ``world`` ranks x ``R = max(1, data.num_workers)`` readers per rank):
the epoch's shard order is a permutation seeded by ``(seed, epoch)`` (sorted
order when ``data.shuffle`` is false); reader slot ``j = rank * R + k`` takes
shards ``order[j::world * R]``, reads them in that order and passes the raw
samples through a shuffle buffer of ``data.shuffle_buffer`` samples seeded by
``(seed, epoch, j)``. Each epoch has ``N // batch_size`` steps (``N`` all
samples); global batch ``t`` is built on every rank by its reader
``t % R`` from that reader's next ``batch_size / world`` samples. A reader
whose shards run out before the epoch's last step reads them again (a few
samples are then seen twice that epoch; others, of longer readers, not at
all): this is what keeps the steps equal on every rank, which DDP needs.
A sample that cannot be decoded is left out of its batch with a warning.

**Resume**: the position is the trainer's ``(epoch, batch_in_epoch)``; each
reader replays its stream from the epoch start up to it, reading but not
decoding the samples before it, so a resumed run gets exactly the batches of
the uninterrupted one. The layout (ranks, readers, shards) is saved in the
checkpoint and must be the same when resuming.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocl.data.webdataset import expand_shards
from audiocl.errors import AudioclError

__all__ = [
    "AUDIO_EXTS",
    "DeviceFeatures",
    "RawSample",
    "Shard",
    "StreamSampler",
    "StreamCollate",
    "WebDatasetSource",
    "check_clip",
    "expand_shards",
    "fit_waveforms",
    "frontend_from_spec",
    "iter_tar_samples",
    "shuffled",
]

#: audio members looked for in a sample, in this order
AUDIO_EXTS = ("flac", "wav", "mp3", "ogg")
_ORDER_STREAM = 0x57440001  # keeps the stream's seeds apart from other uses of (seed, epoch)


@dataclass(frozen=True)
class Shard:
    path: str
    samples: int


@dataclass
class RawSample:
    """One sample as read from a tar: its key and ``{extension: bytes}``."""

    shard: str
    key: str
    parts: dict[str, bytes]


def frontend_from_spec(spec: str | dict[str, Any], field: str = "data.frontend") -> Any:
    """A :class:`~audiocl.audio.frontend.FrontendConfig` from a preset name,
    ``{"preset": NAME, <param>: value, ...}`` or a full parameter dict."""
    from audiocl.audio.frontend import FrontendConfig, get_preset

    try:
        if isinstance(spec, str):
            return get_preset(spec)
        d = dict(spec)
        if "preset" in d:
            return get_preset(str(d.pop("preset")), **d)
        return FrontendConfig.from_dict(d)
    except AudioclError as err:
        raise AudioclError(f"{field}: {err}") from None


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def iter_tar_samples(path: str) -> Iterator[RawSample]:
    """The samples of one tar, read front to back (streaming mode, no seeks):
    consecutive members with the same key form a sample."""
    key: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                k, ext = _split_name(m.name)
                if k != key:
                    if key is not None and parts:
                        yield RawSample(path, key, parts)
                    key, parts = k, {}
                fh = tar.extractfile(m)
                parts[ext] = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise AudioclError(f"shard {path}: not a readable tar ({type(err).__name__}: {err})") from None
    if key is not None and parts:
        yield RawSample(path, key, parts)


def count_samples(path: str) -> int:
    """Samples with an audio member in one tar (headers only: data is seeked over)."""
    keys = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                k, ext = _split_name(m.name)
                if m.isfile() and ext in AUDIO_EXTS:
                    keys.add(k)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise AudioclError(f"shard {path}: not a readable tar ({type(err).__name__}: {err})") from None
    return len(keys)


def shard_sizes(paths: Sequence[str], field: str = "data.webdataset") -> tuple[list[Shard], int]:
    """Each shard with its sample count, from ``sizes.json`` beside it where it lists the
    shard, else counted; returns ``(shards, how many were counted)``."""
    sizes: dict[str, dict[str, Any]] = {}
    out, counted = [], 0
    for p in paths:
        folder = os.path.dirname(os.path.abspath(p))
        if folder not in sizes:
            sj = os.path.join(folder, "sizes.json")
            sizes[folder] = {}
            if os.path.isfile(sj):
                try:
                    loaded = json.loads(Path(sj).read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    raise AudioclError(f"{field}: {sj}: not a JSON object of tar name -> samples ({err})") from None
                if not isinstance(loaded, dict):
                    raise AudioclError(f"{field}: {sj}: not a JSON object of tar name -> samples")
                sizes[folder] = loaded
        n = sizes[folder].get(os.path.basename(p))
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            n = count_samples(p)
            counted += 1
        out.append(Shard(p, int(n)))
    return out, counted


def shuffled(samples: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """webdataset-style shuffle buffer: hold ``size`` samples, emit a random one for
    each that arrives, then drain in random order. ``size <= 1`` keeps the order."""
    if size <= 1:
        yield from samples
        return
    buf: list[Any] = []
    for s in samples:
        if len(buf) < size:
            buf.append(s)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = s
    while buf:
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def parse_meta(raw: RawSample) -> dict[str, Any]:
    """``{"id", "texts", "labels"}`` of a sample from its ``.json`` (LAION: ``text``, ``tag``)."""
    meta: Any = {}
    if "json" in raw.parts:
        meta = json.loads(raw.parts["json"].decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("its .json is not an object")
    item_id = meta.get("id")
    return {
        "id": str(item_id) if item_id not in (None, "") else raw.key,
        "texts": _strings(meta.get("text")),
        "labels": _strings(meta.get("tag")),
    }


class StreamCollate:
    """Raw samples of one batch -> decoded waveforms + length-policy gather maps (CPU, in a worker).

    Returns ``{"ids", "texts", "labels", "waveform": Tensor[B, T] (zero-padded),
    "wav_lengths": LongTensor[B], "frame_index": LongTensor[B, F], "lengths":
    LongTensor[B]}``; ``F = max_frames``, or the longest clip's frames without it.
    """

    def __init__(self, frontend: Any, max_frames: int | None, policy: str) -> None:
        self.fe, self.max_frames, self.policy = frontend, max_frames, policy

    def decode(self, raw: RawSample) -> dict[str, Any] | None:
        from audiocl.audio.io import AudioDecodeError, load_mono

        name = f"{os.path.basename(raw.shard)}:{raw.key}"
        ext = next((e for e in AUDIO_EXTS if e in raw.parts), None)
        if ext is None:
            _warn(f"shard {name}: no audio member ({', '.join(AUDIO_EXTS)}); left out")
            return None
        try:
            meta = parse_meta(raw)
        except (ValueError, UnicodeDecodeError) as err:
            _warn(f"shard {name}.json: {err}; left out")
            return None
        try:
            wav = load_mono(raw.parts[ext], int(self.fe.sample_rate), name=f"{name}.{ext}")
            check_clip(wav, self.fe, f"{name}.{ext}")
        except AudioDecodeError as err:
            _warn(f"{err}; left out")
            return None
        return {**meta, "wav": wav}

    def __call__(self, raws: Sequence[RawSample], seed: int) -> dict[str, Any] | None:
        items = [d for d in (self.decode(r) for r in raws) if d is not None]
        if not items:
            return None
        return fit_waveforms(items, self.fe, self.max_frames, self.policy, seed)


def check_clip(wav: np.ndarray, frontend: Any, name: str) -> None:
    """What extraction checks of a decoded clip: finite samples, and long enough for at
    least one frame of the front-end (else :class:`AudioDecodeError` naming ``name``)."""
    from audiocl.audio.frontend import num_frames
    from audiocl.audio.io import AudioDecodeError, check_waveform

    check_waveform(wav, int(frontend.sample_rate), path=name)
    short = frontend.center and frontend.pad_mode == "reflect" and len(wav) <= frontend.n_fft // 2
    if short or num_frames(len(wav), frontend) < 1:
        raise AudioDecodeError(name, "too_short", "shorter than the front-end's STFT needs")


def fit_waveforms(
    items: Sequence[dict[str, Any]], frontend: Any, max_frames: int | None, policy: str, seed: int
) -> dict[str, Any]:
    """Decoded clips (``{"id", "texts", "labels", "wav": float32[T_i]}``) -> one batch whose
    log-mel :class:`DeviceFeatures` makes later on the training device.

    Each clip's length policy is :func:`~audiocl.audio.length.fit_clip` applied to its
    frame *indices* (seeded by ``seed`` and the id): the gather map ``frame_index[B, F]``
    (``-1`` = padding) and the valid ``lengths[B]``, the crop, tiling and padding
    ``collate_features`` takes from a stored mel of the same clip. Returns ``{"ids",
    "texts", "labels", "waveform": float32[B, T] (zero-padded), "wav_lengths": long[B],
    "frame_index": long[B, F], "lengths": long[B]}``; ``F = max_frames``, or the longest
    clip's frames without it.
    """
    from audiocl.audio.frontend import num_frames
    from audiocl.audio.length import fit_clip

    maps, lengths = [], []
    for it in items:
        n = num_frames(len(it["wav"]), frontend)
        piece = fit_clip(np.arange(n, dtype=np.int64), max_frames, policy, seed=seed, key=it["id"], pad_value=-1)
        maps.append(np.asarray(piece.x, dtype=np.int64))
        lengths.append(piece.length)
    F = max(len(m) for m in maps)
    index = torch.full((len(items), F), -1, dtype=torch.long)
    for i, m in enumerate(maps):
        index[i, : len(m)] = torch.from_numpy(m)
    T = max(len(it["wav"]) for it in items)
    wave = torch.zeros((len(items), T), dtype=torch.float32)
    for i, it in enumerate(items):
        wave[i, : len(it["wav"])] = torch.from_numpy(it["wav"])
    return {
        "ids": [it["id"] for it in items],
        "texts": [it["texts"] for it in items],
        "labels": [it["labels"] for it in items],
        "waveform": wave,
        "wav_lengths": torch.tensor([len(it["wav"]) for it in items], dtype=torch.long),
        "frame_index": index,
        "lengths": torch.tensor(lengths, dtype=torch.long),
    }


class DeviceFeatures:
    """Batch on the training device -> ``batch["features"]`` ``[B, F, n_mels]``.

    Each clip's log-mel is computed whole by the torch ``LogMel`` (on CPU one
    clip per call, the call extraction makes, so the features equal the
    store's bit for bit; on other devices clips of equal length share a call),
    then ``features[i, f] = mel_i[frame_index[i, f]]``, or the log floor where
    the index is ``-1``.
    """

    def __init__(self, frontend: Any) -> None:
        from audiocl.audio.frontend import log_floor

        self.fe = frontend
        self.pad = float(log_floor(frontend))
        self._mods: dict[str, Any] = {}

    def _module(self, device: torch.device) -> Any:
        from audiocl.audio.frontend import LogMel

        key = str(device)
        if key not in self._mods:
            self._mods[key] = LogMel(self.fe).to(device).eval()
        return self._mods[key]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        wave = batch.pop("waveform")
        wl = batch.pop("wav_lengths").tolist()
        index = batch.pop("frame_index")
        mod = self._module(wave.device)
        B, F = index.shape
        out = torch.empty((B, F, self.fe.n_mels), dtype=torch.float32, device=wave.device)
        groups: dict[int, list[int]] = {}
        if wave.device.type == "cpu":
            order = [[i] for i in range(B)]
        else:
            for i, n in enumerate(wl):
                groups.setdefault(int(n), []).append(i)
            order = list(groups.values())
        with torch.no_grad():
            for g in order:
                n = int(wl[g[0]])
                mels = mod(wave[g[0], :n]).unsqueeze(0) if len(g) == 1 else mod(wave[g, :n])
                for j, i in enumerate(g):
                    ix = index[i]
                    rows = mels[j].index_select(0, ix.clamp_min(0))
                    out[i] = torch.where((ix >= 0)[:, None], rows, torch.full_like(rows, self.pad))
        batch["features"] = out
        return batch


class _Batches(torch.utils.data.IterableDataset):
    """One epoch of one rank's batches from its readers (one per DataLoader worker)."""

    def __init__(self, sampler: StreamSampler, epoch: int, start: int) -> None:
        self.s, self.epoch, self.start = sampler, epoch, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        w = info.id if info is not None else 0
        s = self.s
        R = s.readers
        # the DataLoader hands out its workers' batches round robin from worker 0:
        # worker w serves reader (start + w) % R so batches come in step order
        k = (self.start + w) % R
        samples = s.source.reader_samples(self.epoch, s.rank * R + k, s.world * R, s.seed, s.shuffle, s.buffer)
        from audiocl.train.data import batch_seed

        for t in range(k, len(s), R):
            raws = list(itertools.islice(samples, s.local))
            if t < self.start:
                continue  # replay up to the resume point: read, never decoded
            seed = batch_seed(s.seed, self.epoch, t, 0)  # the store route's batch seed
            batch = s.collate(raws, seed)
            if batch is None:
                where = ", ".join(sorted({f"{os.path.basename(r.shard)}:{r.key}" for r in raws})[:3])
                raise AudioclError(f"every sample of batch {t} of epoch {self.epoch} failed to decode ({where}, ...)")
            batch["_seed"] = seed
            yield batch


class _Loader:
    """Re-iterable: each ``iter()`` is a DataLoader over the sampler's current epoch and start."""

    def __init__(self, sampler: StreamSampler, num_workers: int, pin_memory: bool) -> None:
        self.sampler, self.nw, self.pin = sampler, num_workers, pin_memory

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s = self.sampler
        dl = torch.utils.data.DataLoader(
            _Batches(s, s.epoch, s.start), batch_size=None, num_workers=self.nw,
            pin_memory=self.pin, prefetch_factor=4 if self.nw > 0 else None,
            # its own generator: starting an iterator must not draw from the global
            # torch RNG (dropout), or the run would depend on where it was resumed
            generator=torch.Generator().manual_seed(s.seed),
        )  # fmt: skip
        try:
            yield from dl
        except AudioclError as err:
            # a worker's error comes back with its traceback in the message: keep its last line
            last = str(err).strip().splitlines()[-1]
            if "Traceback" not in str(err):
                raise
            raise AudioclError(last.split("AudioclError: ", 1)[-1]) from None


class StreamSampler:
    """The trainer's view of a stream: ``len()`` steps per epoch, ``set_epoch``,
    ``set_start`` (resume inside an epoch), :meth:`loader` and the :meth:`state`
    a checkpoint keeps."""

    def __init__(
        self, source: WebDatasetSource, global_batch: int, *, rank: int, world: int, seed: int,
        shuffle: bool, buffer: int, readers: int, collate: StreamCollate,
    ) -> None:  # fmt: skip
        if global_batch % world:
            raise AudioclError(f"batch size {global_batch} is not divisible by {world} workers")
        if len(source.shards) < world * readers:
            raise AudioclError(
                f"{source.field}: {len(source.shards)} shard(s) cannot feed {world} rank(s) x {readers} "
                "reader(s) (each reads its own shards); use fewer data.num_workers or more shards"
            )
        self.source, self.B, self.local = source, global_batch, global_batch // world
        self.rank, self.world, self.readers = rank, world, readers
        self.seed, self.shuffle, self.buffer, self.collate = seed, shuffle, buffer, collate
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return len(self.source) // self.B

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, batch: int) -> None:
        self.start = int(batch)

    def loader(self, num_workers: int, pin_memory: bool = False) -> _Loader:
        return _Loader(self, num_workers, pin_memory)

    def state(self) -> dict[str, Any]:
        return {"world": self.world, "readers": self.readers, "shards": self.source.fingerprint()}


class WebDatasetSource:
    """The shards of one pattern with their sizes (``len()`` = samples)."""

    def __init__(self, pattern: str, field: str = "data.webdataset") -> None:
        self.pattern, self.field = pattern, field
        self.shards, self.counted = shard_sizes(expand_shards(pattern, field), field)
        if self.counted:
            _warn(f"{field}: {self.counted} of {len(self.shards)} shard(s) not in a sizes.json; counted their samples")
        if len(self) == 0:
            raise AudioclError(f"{field}: the shards of {pattern} hold no samples with audio")

    def __len__(self) -> int:
        return sum(s.samples for s in self.shards)

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([[os.path.basename(s.path), s.samples] for s in self.shards]).encode())
        return f"{len(self.shards)} shards, {len(self)} samples, {h.hexdigest()[:16]}"

    def shard_order(self, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
        n = len(self.shards)
        if not shuffle:
            return np.arange(n)
        return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(n)

    def reader_samples(
        self, epoch: int, slot: int, slots: int, seed: int, shuffle: bool, buffer: int
    ) -> Iterator[RawSample]:
        """Reader ``slot`` of ``slots``: its shards of the epoch, shuffled through the
        buffer, over and over (the consumer takes what the epoch's steps need)."""
        mine = self.shard_order(epoch, seed, shuffle)[slot::slots].tolist()
        for again in itertools.count():
            rng = np.random.default_rng([seed, epoch, slot, again, _ORDER_STREAM])
            raw = (s for i in mine for s in iter_tar_samples(self.shards[i].path))
            got = False
            for s in shuffled(raw, buffer if shuffle else 0, rng):
                got = True
                yield s
            if not got:
                names = ", ".join(os.path.basename(self.shards[i].path) for i in mine[:3])
                raise AudioclError(f"{self.field}: shard(s) {names} hold no samples")

    def epoch_ids(self, epoch: int, *, seed: int, shuffle: bool, buffer: int, batch: int) -> list[list[str]]:
        """The ids of each batch of one single-process, single-reader epoch (no decoding)."""
        it = self.reader_samples(epoch, 0, 1, seed, shuffle, buffer)
        return [[parse_meta(r)["id"] for r in itertools.islice(it, batch)] for _ in range(len(self) // batch)]

    def sampler(self, global_batch: int, *, rank: int, world: int, seed: int, shuffle: bool, buffer: int,
                readers: int, collate: StreamCollate) -> StreamSampler:  # fmt: skip
        return StreamSampler(self, global_batch, rank=rank, world=world, seed=seed, shuffle=shuffle,
                             buffer=buffer, readers=readers, collate=collate)  # fmt: skip

    def eval_batches(self, global_batch: int, *, rank: int, world: int, seed: int,
                     collate: StreamCollate) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Every sample once, in shard order (each rank reads all shards: validation sets
        are small), as this rank's contiguous part of each global batch; the last batch
        may be short (left out under DDP when it has fewer items than ranks)."""
        from audiocl.train.data import batch_seed

        it = (s for sh in self.shards for s in iter_tar_samples(sh.path))
        for b in itertools.count():
            chunk = list(itertools.islice(it, global_batch))
            if not chunk or (world > 1 and len(chunk) < world):
                return
            mine = [chunk[i] for i in np.array_split(np.arange(len(chunk)), world)[rank].tolist()]
            out = collate(mine, batch_seed(seed, 0, b, 0))
            if out is not None:
                yield out

