"""The sharded feature store: what ``audiocl extract`` writes and training reads.

Layout of a store directory::

    features.json                    parameters (front-end dict + hash, what is stored,
                                     dtype, shard size, length limits) and format version
    shards/shard-000012.npy          log-mel of the shard's good items, concatenated along
                                     time: one array [total_frames, n_mels] (.npy, so it is
                                     memory-mapped with ``np.load(mmap_mode="r")``)
    shards/shard-000012.flac         optional: the resampled mono waveforms, concatenated
                                     (16-bit FLAC at the front-end's sample rate)
    shards/shard-000012.index.jsonl  one line per good item: id, offset, num_frames,
                                     wav_offset, num_samples
    shards/shard-000012.errors.jsonl one line per failed item: id, path, reason, message
    shards/shard-000012.done         completion marker, written last: the shard's spec hash
                                     and the size and sha256 of each of its files
    index.jsonl                      all shards' index lines, shard order (written at the end)
    errors.jsonl                     all shards' errors, shard order (written at the end)

Choices, and why:

* Log-mel is stored as **float32** by default so that what is read back is exactly
  what the front-end computed (tests compare bit for bit); ``dtype="float16"`` halves
  the disk and page-cache footprint at ~0.03 dB resolution near 40 dB.
* One ``.npy`` per shard (not one file per item) keeps the file count low on
  cluster file systems and lets ``store[id]`` be a zero-copy slice of a memmap.
* Every file is written under a temporary name and moved into place with
  ``os.replace``; the ``.done`` marker is written last, so a shard without a
  marker is simply redone by ``--resume``.
* Damage is found before use: every :class:`FeatureStore` open runs
  :func:`check_store` (sizes against the markers, ``.npy`` headers, index against
  the per-shard index hashes, the ``features.json`` parameter hash; a few ms for
  thousands of items); ``FeatureStore(dir, verify=True)`` / ``audiocl info --verify``
  re-hash every byte (values altered in place are only found that way).
* Shard ``i`` always holds manifest items ``[i*K, (i+1)*K)``, so the shard files do
  not depend on the number of workers or on the order in which shards finished,
  and :func:`content_hash` of a resumed store equals that of a single run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_open, atomic_write_bytes, atomic_write_text, tmp_path

FORMAT = "audiocl-feature-store"
FORMAT_VERSION = 1
KINDS = ("logmel", "waveform")
DTYPES = ("float32", "float16")
WAVEFORM_SUBTYPE = "PCM_16"

FEATURES_JSON = "features.json"
INDEX_JSONL = "index.jsonl"
ERRORS_JSONL = "errors.jsonl"
SHARDS_DIR = "shards"


def shard_name(index: int) -> str:
    """Deterministic shard stem: ``shard-000012``."""
    return f"shard-{index:06d}"


def canonical_json(obj: Any) -> str:
    """The one JSON spelling used for hashes and for files compared byte for byte:
    sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class StoreParams:
    """Everything that decides the bytes of a store; two stores with equal params
    built from the same manifest are identical.

    ``frontend`` is ``FrontendConfig.to_dict()`` and ``frontend_hash`` its ``hash()``.
    """

    frontend: dict[str, Any]
    frontend_hash: str
    kinds: tuple[str, ...] = ("logmel",)
    dtype: str = "float32"
    shard_size: int = 256
    min_duration: float | None = None
    max_duration: float | None = None
    waveform_subtype: str = WAVEFORM_SUBTYPE

    def __post_init__(self) -> None:
        kinds = tuple(k for k in KINDS if k in self.kinds)
        if not kinds or set(self.kinds) - set(KINDS):
            raise AudioclError(
                f"a store holds 'logmel' and/or 'waveform', not {list(self.kinds)}"
            )
        object.__setattr__(self, "kinds", kinds)
        if self.dtype not in DTYPES:
            raise AudioclError(f"store dtype must be one of {DTYPES}, not {self.dtype!r}")
        if int(self.shard_size) < 1:
            raise AudioclError(f"shard size must be >= 1, not {self.shard_size}")
        for name in ("min_duration", "max_duration"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and np.isfinite(v)):
                raise AudioclError(f"{name.replace('_', '-')} must be >= 0, not {v}")
        if (
            self.min_duration is not None
            and self.max_duration is not None
            and self.min_duration > self.max_duration
        ):
            raise AudioclError(
                f"min-duration {self.min_duration} is above max-duration {self.max_duration}"
            )

    @classmethod
    def from_frontend(cls, cfg: Any, **kw: Any) -> StoreParams:
        """Build params from a ``FrontendConfig`` (anything with ``to_dict``/``hash``)."""
        return cls(frontend=cfg.to_dict(), frontend_hash=cfg.hash(), **kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frontend": self.frontend,
            "frontend_hash": self.frontend_hash,
            "kinds": list(self.kinds),
            "dtype": self.dtype,
            "shard_size": int(self.shard_size),
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
            "waveform_subtype": self.waveform_subtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreParams:
        return cls(
            frontend=dict(d["frontend"]),
            frontend_hash=str(d["frontend_hash"]),
            kinds=tuple(d["kinds"]),
            dtype=str(d["dtype"]),
            shard_size=int(d["shard_size"]),
            min_duration=d.get("min_duration"),
            max_duration=d.get("max_duration"),
            waveform_subtype=str(d.get("waveform_subtype", WAVEFORM_SUBTYPE)),
        )

    @property
    def sample_rate(self) -> int:
        return int(self.frontend["sample_rate"])

    @property
    def n_mels(self) -> int:
        return int(self.frontend["n_mels"])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def params_diff(have: StoreParams, want: StoreParams) -> list[str]:
    """Human-readable list of the keys whose values differ (``key: stored vs requested``)."""
    a, b = _flatten(have.to_dict()), _flatten(want.to_dict())
    a.pop("frontend_hash", None)
    b.pop("frontend_hash", None)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} in the store, {b.get(key, '<absent>')!r} requested")
    if not out and have.frontend_hash != want.frontend_hash:
        out.append(f"frontend_hash: {have.frontend_hash} in the store, {want.frontend_hash} requested")
    return out


def read_params(store_dir: str | os.PathLike) -> StoreParams:
    """Read ``features.json``; AudioclError if the folder is not a store."""
    path = Path(store_dir) / FEATURES_JSON
    if not path.is_file():
        raise AudioclError(f"{store_dir} is not a feature store (no {FEATURES_JSON})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AudioclError(f"{path}: unreadable ({err})") from None
    if not isinstance(doc, dict):
        raise AudioclError(f"{path}: not an audiocl feature store (not a JSON object)")
    if doc.get("format") != FORMAT:
        raise AudioclError(f"{path}: not an audiocl feature store (format {doc.get('format')!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise AudioclError(
            f"{path}: store format version {doc.get('version')} is not supported "
            f"(this audiocl reads version {FORMAT_VERSION})"
        )
    if not isinstance(doc.get("params"), dict):
        raise AudioclError(f"{path}: not an audiocl feature store (no 'params' object)")
    recorded = doc.get("params_sha256")
    # stores made before the hash was recorded have none; every store made since has
    if recorded is not None and recorded != params_sha256(doc["params"]):
        raise AudioclError(
            f"{path}: the parameters were changed after the store was made (their sha256 "
            "differs from params_sha256); the shards were computed with the original ones"
        )
    try:
        return StoreParams.from_dict(doc["params"])
    except (KeyError, TypeError, ValueError) as err:
        raise AudioclError(f"{path}: bad 'params' ({type(err).__name__}: {err})") from None


def params_sha256(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a store's parameters (recorded in features.json)."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- writing


@dataclass
class ShardResult:
    """What a worker made of one shard; small, so it travels back through Ray."""

    shard: int
    done: int
    failed: int
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    #: worker CPU seconds per stage (decode, resample, logmel, write); not stored
    cpu: dict[str, float] = field(default_factory=dict)
    #: wall-clock (epoch seconds) when the worker started and finished the shard
    t_start: float = 0.0
    t_end: float = 0.0


class StoreWriter:
    """Creates or reopens a store for writing; shard writes may come from many processes.

    ``StoreWriter.create(dir, params, resume=...)`` checks the folder: a store made
    with other parameters is refused (naming the differing keys); an existing
    store with shards is refused unless ``resume`` is set.
    """

    def __init__(self, store_dir: str | os.PathLike, params: StoreParams) -> None:
        self.dir = Path(store_dir)
        self.params = params
        self.shards_dir = self.dir / SHARDS_DIR

    @classmethod
    def create(
        cls, store_dir: str | os.PathLike, params: StoreParams, *, resume: bool = False
    ) -> StoreWriter:
        d = Path(store_dir)
        if d.exists() and not d.is_dir():
            raise AudioclError(f"{d} exists and is not a folder")
        if (d / FEATURES_JSON).exists():
            have = read_params(d)
            diff = params_diff(have, params)
            if diff:
                raise AudioclError(
                    f"store at {d} was made with other parameters: " + "; ".join(diff)
                    + " (choose another --out, or delete it to start over)"
                )
            if not resume and (any((d / SHARDS_DIR).glob("*.done")) or (d / INDEX_JSONL).exists()):
                raise AudioclError(
                    f"store at {d} already holds extracted shards; pass --resume to "
                    "finish it, or choose an empty --out"
                )
        elif d.exists() and any(d.iterdir()):
            raise AudioclError(
                f"{d} is not empty and holds no feature store; choose an empty or new --out"
            )
        d.mkdir(parents=True, exist_ok=True)
        (d / SHARDS_DIR).mkdir(exist_ok=True)
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "params": params.to_dict(),
               "params_sha256": params_sha256(params.to_dict())}
        atomic_write_text(d / FEATURES_JSON, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return cls(d, params)

    def invalidate_index(self) -> None:
        """Remove the global index and errors before shards change; :meth:`finalize`
        writes them again, so a store is never readable with a stale index."""
        for name in (INDEX_JSONL, ERRORS_JSONL):
            (self.dir / name).unlink(missing_ok=True)

    # -- per shard

    def paths(self, shard: int) -> dict[str, Path]:
        stem = self.shards_dir / shard_name(shard)
        return {
            "logmel": stem.with_suffix(".npy"),
            "waveform": stem.with_suffix(".flac"),
            "index": stem.with_suffix(".index.jsonl"),
            "errors": stem.with_suffix(".errors.jsonl"),
            "done": stem.with_suffix(".done"),
        }

    def is_done(self, shard: int, spec_hash: str) -> bool:
        """True if the shard's marker exists, was made for this spec, and its files
        are all there with the recorded sizes (a cheap check; the sha256 is recorded
        for :func:`verify_store`)."""
        p = self.paths(shard)
        try:
            marker = json.loads(p["done"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if marker.get("spec_hash") != spec_hash:
            return False
        for name, info in marker.get("files", {}).items():
            f = self.shards_dir / name
            if not f.is_file() or f.stat().st_size != info["size"]:
                return False
        return True

    def check_resume(self, spec_hashes: Sequence[str], manifest: str | os.PathLike) -> None:
        """Refuse to resume from another manifest, before anything is changed: every
        finished shard must have been made from the same manifest lines, and the store
        may not hold shards beyond the manifest's ``len(spec_hashes)``."""
        n = len(spec_hashes)
        extra = sorted(
            f.name for f in self.shards_dir.glob("shard-*.done") if int(f.name[6:12]) >= n
        )
        if extra:
            raise AudioclError(
                f"store at {self.dir} holds shards beyond the {n} of {manifest} (first "
                f"{extra[0]}): it was made from a longer manifest; nothing was changed "
                "(use another --out for this manifest)"
            )
        for i, spec_hash in enumerate(spec_hashes):
            done = self.paths(i)["done"]
            if not done.is_file():
                continue
            try:
                marker = json.loads(done.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # an unreadable marker: the shard is redone, as if unfinished
            if isinstance(marker, dict) and marker.get("spec_hash") != spec_hash:
                raise AudioclError(
                    f"store at {self.dir}: {shard_name(i)} was made from other lines than "
                    f"items {i * self.params.shard_size + 1}-"
                    f"{(i + 1) * self.params.shard_size} of {manifest}: the manifest changed; "
                    "nothing was changed (use another --out for this manifest)"
                )

    def begin_shard(self, shard: int, spec_hash: str) -> ShardBuilder:
        """Start writing shard ``shard``; add items one by one, then ``commit()``."""
        return ShardBuilder(self, shard, spec_hash)

    def write_shard(
        self,
        shard: int,
        spec_hash: str,
        entries: Sequence[dict[str, Any]],
        logmels: Sequence[np.ndarray] | None,
        waveforms: Sequence[np.ndarray] | None,
        errors: Sequence[dict[str, Any]],
    ) -> ShardResult:
        """Write one shard at once. ``entries[j]`` (at least ``{"id": ...}``) goes
        with ``logmels[j]`` [frames, n_mels] and ``waveforms[j]`` [samples]."""
        b = self.begin_shard(shard, spec_hash)
        for j, e in enumerate(entries):
            b.add(e, None if logmels is None else logmels[j], None if waveforms is None else waveforms[j])
        for e in errors:
            b.fail(e)
        return b.commit()

    def shard_result(self, shard: int) -> ShardResult:
        """The counts recorded in a finished shard's marker (used when resume skips it)."""
        marker = json.loads(self.paths(shard)["done"].read_text(encoding="utf-8"))
        return ShardResult(shard, marker["done"], marker["failed"], marker["reasons"], True)

    def finalize(self, num_shards: int) -> None:
        """Concatenate the per-shard index and error files, in shard order, into
        ``index.jsonl`` and ``errors.jsonl``; refuses to if a shard is unfinished
        or an id occurs twice."""
        missing = [i for i in range(num_shards) if not self.paths(i)["done"].is_file()]
        if missing:
            raise AudioclError(
                f"store at {self.dir}: {len(missing)} shard(s) unfinished "
                f"(first {shard_name(missing[0])}); run again with --resume"
            )
        # shards beyond num_shards are left over from a longer manifest of an earlier
        # run with the same parameters; they would break the one-store-one-manifest rule
        extra = sorted(
            f.name for f in self.shards_dir.glob("shard-*.done")
            if int(f.name[6:12]) >= num_shards
        )
        if extra:
            raise AudioclError(
                f"store at {self.dir} holds shards beyond this manifest's {num_shards} "
                f"(first {extra[0]}); it was made from a longer manifest"
            )
        seen: set[str] = set()
        # errors first, index last: a store is readable only once index.jsonl exists
        with atomic_open(self.dir / ERRORS_JSONL) as fe:
            for i in range(num_shards):
                fe.write(self.paths(i)["errors"].read_bytes())
        with atomic_open(self.dir / INDEX_JSONL) as fi:
            for i in range(num_shards):
                p = self.paths(i)
                for line in p["index"].read_bytes().splitlines(keepends=True):
                    e = json.loads(line)
                    if e["id"] in seen:
                        raise AudioclError(f"id {e['id']!r} occurs twice in the store")
                    seen.add(e["id"])
                    fi.write(canonical_json({"shard": i, **e}).encode("utf-8") + b"\n")


class ShardBuilder:
    """One shard being written: log-mels are kept (they are small), waveforms are
    streamed into a temporary FLAC as they come, so a shard of long clips never
    holds its audio in memory. Nothing is visible under the final names until
    :meth:`commit`, which writes the marker last."""

    def __init__(self, writer: StoreWriter, shard: int, spec_hash: str) -> None:
        self.writer = writer
        self.params = writer.params
        self.shard = shard
        self.spec_hash = spec_hash
        self.paths = writer.paths(shard)
        self.paths["done"].unlink(missing_ok=True)
        self.index: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.mels: list[np.ndarray] = []
        self._frames = 0
        self._samples = 0
        self._flac: Any = None
        self._flac_tmp = tmp_path(self.paths["waveform"])

    def add(self, entry: dict[str, Any], logmel: np.ndarray | None, waveform: np.ndarray | None) -> None:
        e = dict(entry)
        if "logmel" in self.params.kinds:
            if logmel is None or logmel.ndim != 2 or logmel.shape[1] != self.params.n_mels:
                raise ValueError(f"log-mel of {e['id']} has shape {getattr(logmel, 'shape', None)}")
            e["offset"] = self._frames
            e["num_frames"] = int(logmel.shape[0])
            self._frames += int(logmel.shape[0])
            self.mels.append(np.asarray(logmel, dtype=self.params.dtype))
        if "waveform" in self.params.kinds:
            if waveform is None or waveform.ndim != 1:
                raise ValueError(f"waveform of {e['id']} must be 1-D")
            if self._flac is None:
                import soundfile as sf

                self._flac = sf.SoundFile(
                    self._flac_tmp, "w", samplerate=self.params.sample_rate, channels=1,
                    format="FLAC", subtype=self.params.waveform_subtype,
                )
            # clip explicitly: the resampler can overshoot 1.0 slightly
            self._flac.write(np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0))
            e["wav_offset"] = self._samples
            e["num_samples"] = int(waveform.shape[0])
            self._samples += int(waveform.shape[0])
        self.index.append(e)

    def fail(self, error: dict[str, Any]) -> None:
        self.errors.append(dict(error))

    def abort(self) -> None:
        """Drop a shard that cannot be finished (disk full, ...): its temporary FLAC
        goes; no marker is written, so ``--resume`` redoes the shard."""
        if self._flac is not None:
            try:
                self._flac.close()
            except Exception:
                pass  # closing flushes, and the disk may still be full
            self._flac = None
        self._flac_tmp.unlink(missing_ok=True)

    def commit(self) -> ShardResult:
        p = self.paths
        files: dict[str, dict[str, Any]] = {}
        if "logmel" in self.params.kinds:
            files[p["logmel"].name] = _write_npy(p["logmel"], self.mels, self.params.dtype, self.params.n_mels)
        if "waveform" in self.params.kinds:
            try:
                if self._flac is not None:
                    self._flac.close()
                else:
                    # libsndfile cannot write a readable 0-frame FLAC: an all-failed shard
                    # gets an empty file that no index entry points into
                    self._flac_tmp.write_bytes(b"")
                os.replace(self._flac_tmp, p["waveform"])
            except BaseException:
                self.abort()
                raise
            files[p["waveform"].name] = {"size": p["waveform"].stat().st_size,
                                         "sha256": _sha256_file(p["waveform"])}
        for key, rows in (("index", self.index), ("errors", self.errors)):
            body = "".join(canonical_json(e) + "\n" for e in rows).encode("utf-8")
            atomic_write_bytes(p[key], body)
            files[p[key].name] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        reasons = Counter(str(e.get("reason", "error")) for e in self.errors)
        marker = {
            "shard": self.shard,
            "spec_hash": self.spec_hash,
            "done": len(self.index),
            "failed": len(self.errors),
            "reasons": dict(sorted(reasons.items())),
            "files": files,
        }
        atomic_write_text(p["done"], canonical_json(marker) + "\n")
        return ShardResult(self.shard, len(self.index), len(self.errors), dict(reasons))


def _write_npy(path: Path, arrays: Sequence[np.ndarray], dtype: str, n_mels: int) -> dict[str, Any]:
    """Write the concatenation of ``arrays`` as one .npy without building it in memory."""
    total = sum(int(a.shape[0]) for a in arrays)
    dt = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": (total, n_mels)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    h = hashlib.sha256()
    size = 0
    with atomic_open(path) as f:
        head = buf.getvalue()
        f.write(head)
        h.update(head)
        size += len(head)
        for a in arrays:
            # the array's own buffer: no per-item copy of the frames
            chunk = memoryview(np.ascontiguousarray(a, dtype=dt)).cast("B")
            f.write(chunk)
            h.update(chunk)
            size += chunk.nbytes
    return {"size": size, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------- reading


class FeatureStore:
    """Read-only view of a finished store.

    ``store[id]`` is the log-mel [frames, n_mels] as a read-only memmap slice
    (zero copy); ``store.waveform(id)`` decodes the item's samples from the shard
    FLAC. Opening runs the cheap integrity checks (:func:`check_store`);
    ``verify=True`` also re-hashes every file (:func:`verify_store`). Either raises
    AudioclError naming the first damaged file. Memmaps open lazily per shard, so a store can be passed to DataLoader
    workers (fork or spawn) before any read.
    """

    def __init__(self, store_dir: str | os.PathLike, *, verify: bool = False) -> None:
        self.dir = Path(store_dir)
        self.params = read_params(self.dir)
        index_path = self.dir / INDEX_JSONL
        if not index_path.is_file():
            raise AudioclError(
                f"store at {self.dir} is unfinished (no {INDEX_JSONL}); "
                "run `audiocl extract ... --resume` to complete it"
            )
        raw_lines: list[bytes] = []
        rows = _read_index(index_path, raw_lines)
        self._ids = [e["id"] for e in rows]
        self._row = {k: i for i, k in enumerate(self._ids)}
        if len(self._row) != len(self._ids):
            dup = next(k for k, n in Counter(self._ids).items() if n > 1)
            raise AudioclError(f"{index_path}: id {dup!r} occurs twice; the index is damaged")
        self._shard = np.asarray([e["shard"] for e in rows], dtype=np.int64)
        self._offset = np.asarray([e.get("offset", -1) for e in rows], dtype=np.int64)
        self._frames = np.asarray([e.get("num_frames", -1) for e in rows], dtype=np.int64)
        self._wav_offset = np.asarray([e.get("wav_offset", -1) for e in rows], dtype=np.int64)
        self._samples = np.asarray([e.get("num_samples", -1) for e in rows], dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        check_store(self.dir, self.params, rows, raw_lines)
        if verify:
            problems = verify_store(self.dir)
            if problems:
                first = problems[0]
                if first.startswith("shard-"):
                    first = str(self.dir / SHARDS_DIR / first)
                elif first.startswith(ERRORS_JSONL):
                    first = str(self.dir / first)
                raise AudioclError(
                    f"store at {self.dir} is damaged: {first}"
                    + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    # -- metadata

    @property
    def config(self) -> Any:
        """The ``FrontendConfig`` the store was made with."""
        from audiocl.audio.frontend import FrontendConfig

        return FrontendConfig.from_dict(self.params.frontend)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.params.kinds

    @property
    def sample_rate(self) -> int:
        return self.params.sample_rate

    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def _rowof(self, item_id: str) -> int:
        try:
            return self._row[item_id]
        except KeyError:
            raise KeyError(f"id {item_id!r} is not in the store at {self.dir}") from None

    def shard_of(self, item_id: str) -> int:
        return int(self._shard[self._rowof(item_id)])

    def num_frames(self, item_id: str) -> int:
        return int(self._frames[self._rowof(item_id)])

    def num_samples(self, item_id: str) -> int:
        return int(self._samples[self._rowof(item_id)])

    @property
    def shard_array(self) -> np.ndarray:
        """Shard number of each item, in :meth:`ids` order (for shard-aware samplers)."""
        return self._shard

    @property
    def frames_array(self) -> np.ndarray:
        return self._frames

    def errors(self) -> list[dict[str, Any]]:
        path = self.dir / ERRORS_JSONL
        if not path.is_file():
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    # -- data

    def _map(self, shard: int) -> np.ndarray:
        m = self._maps.get(shard)
        if m is None:
            path = self.dir / SHARDS_DIR / f"{shard_name(shard)}.npy"
            try:
                # allow_pickle=False (numpy's default, spelled out): a shard is never unpickled
                m = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                # the file changed after the store was opened (checked then)
                raise AudioclError(f"{path}: cannot read the shard ({err})") from None
            self._maps[shard] = m
        return m

    def __getitem__(self, item_id: str) -> np.ndarray:
        if "logmel" not in self.params.kinds:
            raise AudioclError(f"store at {self.dir} holds waveforms only (no log-mel)")
        r = self._rowof(item_id)
        o = int(self._offset[r])
        return self._map(int(self._shard[r]))[o : o + int(self._frames[r])]

    def waveform(self, item_id: str) -> np.ndarray:
        """The stored mono waveform, float32 [samples], at :attr:`sample_rate`."""
        if "waveform" not in self.params.kinds:
            raise AudioclError(f"store at {self.dir} holds no waveforms (extract with --store-waveform)")
        import soundfile as sf

        r = self._rowof(item_id)
        path = self.dir / SHARDS_DIR / f"{shard_name(int(self._shard[r]))}.flac"
        with sf.SoundFile(path) as f:
            f.seek(int(self._wav_offset[r]))
            return f.read(int(self._samples[r]), dtype="float32", always_2d=False)


# --------------------------------------------------------------------------- checks on open


def _read_index(path: Path, raw_lines: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Parse ``index.jsonl``; a bad line is an InputError naming the file and line.
    ``raw_lines``, if given, receives each line's bytes (for :func:`check_store`)."""
    from audiocl.errors import InputError

    rows: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw_lines is not None:
                raw_lines.append(raw)
            try:
                e = json.loads(raw)
            except (ValueError, RecursionError) as err:
                raise InputError(str(path), f"not a JSON object ({type(err).__name__}); "
                                 "the index is damaged", line=lineno) from None
            if not isinstance(e, dict):
                raise InputError(str(path), "not a JSON object; the index is damaged", line=lineno)
            for key, types in (("id", str), ("shard", int), ("offset", int), ("num_frames", int),
                               ("wav_offset", int), ("num_samples", int)):
                v = e.get(key)
                if v is None and key not in ("id", "shard"):
                    continue
                if not isinstance(v, types) or isinstance(v, bool):
                    raise InputError(str(path), f"{'missing' if v is None else 'bad value ' + _short(v)}; "
                                     "the index is damaged", line=lineno, field=key)
            rows.append(e)
    return rows


def _short(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 40 else t[:37] + "..."


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        m = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise AudioclError(f"{path}: unreadable shard marker ({type(err).__name__})") from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict) or not isinstance(m.get("done"), int):
        raise AudioclError(f"{path}: not a shard marker (no 'files'/'done')")
    return m


def npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data offset)`` from a .npy header, without
    reading (or unpickling) the data; AudioclError naming the file if it is not a .npy."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            return dtype, tuple(shape), bool(fortran), f.tell()
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise AudioclError(f"{path}: not a readable .npy shard ({err})") from None


def check_store(
    store_dir: str | os.PathLike,
    params: StoreParams,
    rows: list[dict[str, Any]],
    raw_lines: list[bytes] | None = None,
) -> None:
    """The cheap checks made on every open (sizes, headers, index agreement); raise
    AudioclError naming the first damaged file. Reads the small files (markers,
    .npy headers) and stats the big ones; no shard data is read.

    - every shard 0..n-1 has a marker, and every file the marker lists exists with
      the recorded size (a truncated, extended, deleted or replaced file);
    - each ``.npy`` has a .npy header with the store's dtype (never an object array,
      so nothing is unpickled), C order, shape ``[frames, n_mels]``, and exactly
      ``header + frames * n_mels * itemsize`` bytes;
    - ``index.jsonl``'s lines of shard ``i``, re-serialised, have the sha256 the marker
      records for ``shard-i.index.jsonl``: a swapped, duplicated, dropped or edited
      index line is found; offsets and frame counts lie inside the shard and tile it;
    - ``errors.jsonl`` has the summed size of the per-shard error files.

    Altered values inside a shard that keep its size (finite numbers written over
    others) pass these checks: only the full hash (:func:`verify_store`) finds them.
    """
    d = Path(store_dir)
    shards_dir = d / SHARDS_DIR
    index_path = d / INDEX_JSONL
    markers: dict[int, dict[str, Any]] = {}
    for mpath in shards_dir.glob("shard-*.done"):
        try:
            num = int(mpath.name[6:-5])
        except ValueError:
            continue
        markers[num] = _read_marker(mpath)
    by_shard: dict[int, list[dict[str, Any]]] = {}
    raw_by_shard: dict[int, list[bytes]] = {}
    for j, e in enumerate(rows):
        by_shard.setdefault(int(e["shard"]), []).append(e)
        if raw_lines is not None:
            raw_by_shard.setdefault(int(e["shard"]), []).append(raw_lines[j])
    n = max([*markers, *by_shard], default=-1) + 1
    for i in range(n):
        if i not in markers:
            raise AudioclError(
                f"{shards_dir / (shard_name(i) + '.done')}: missing, though the store has "
                f"{n} shards (the shard was deleted or never finished)"
            )
    errors_size = 0
    for i in range(n):
        m = markers[i]
        stem = shard_name(i)
        for name, info in m["files"].items():
            f = shards_dir / name
            if not f.is_file():
                raise AudioclError(f"{f}: missing (listed in {stem}.done)")
            size = f.stat().st_size
            if not isinstance(info, dict) or size != info.get("size"):
                raise AudioclError(
                    f"{f}: {size} bytes, but {stem}.done records "
                    f"{info.get('size') if isinstance(info, dict) else info!r} (truncated or replaced)"
                )
        err_info = m["files"].get(f"{stem}.errors.jsonl")
        if isinstance(err_info, dict):
            errors_size += int(err_info["size"])
        entries = by_shard.get(i, [])
        if len(entries) != m["done"]:
            raise AudioclError(
                f"{index_path}: {len(entries)} lines for {stem}, but {stem}.done "
                f"records {m['done']} items (lines dropped, duplicated or moved)"
            )
        idx_info = m["files"].get(f"{stem}.index.jsonl")
        if isinstance(idx_info, dict):
            if raw_lines is not None:
                # finalize wrote each line as the shard file's line with "shard":i added;
                # the canonical JSON sorts keys and has no spaces, and no string can hold
                # an unescaped quote, so removing that one member gives the shard's line
                # back (5x faster than serialising the parsed rows again)
                member = f',"shard":{i}'.encode()
                body = b"".join(r.replace(member, b"", 1) for r in raw_by_shard.get(i, []))
            else:
                body = "".join(
                    canonical_json({k: v for k, v in e.items() if k != "shard"}) + "\n"
                    for e in entries
                ).encode("utf-8")
            if hashlib.sha256(body).hexdigest() != idx_info.get("sha256"):
                raise AudioclError(
                    f"{index_path}: the lines of {stem} differ from what its marker "
                    f"records (swapped, duplicated or edited index lines)"
                )
        if "logmel" in params.kinds:
            npy = shards_dir / f"{stem}.npy"
            if f"{stem}.npy" not in m["files"]:
                raise AudioclError(f"{shards_dir / (stem + '.done')}: lists no {stem}.npy")
            dtype, shape, fortran, data_at = npy_header(npy)
            if dtype != np.dtype(params.dtype):
                raise AudioclError(f"{npy}: dtype {dtype}, but the store holds {params.dtype}")
            if fortran or len(shape) != 2 or shape[1] != params.n_mels:
                raise AudioclError(
                    f"{npy}: shape {shape}{' (Fortran order)' if fortran else ''}, but the store "
                    f"holds C-order [frames, {params.n_mels}]"
                )
            want = data_at + shape[0] * shape[1] * dtype.itemsize
            if npy.stat().st_size != want:
                raise AudioclError(
                    f"{npy}: {npy.stat().st_size} bytes, but its header describes {want}"
                )
            at = 0
            for e in entries:
                o, k = e.get("offset"), e.get("num_frames")
                if o != at or not isinstance(k, int) or k < 1 or o + k > shape[0]:
                    raise AudioclError(
                        f"{index_path}: id {e['id']!r}: frames {o}+{k} do not follow on in "
                        f"{npy.name} ({shape[0]} frames, next free {at})"
                    )
                at = o + k
            if at != shape[0]:
                raise AudioclError(f"{npy}: {shape[0]} frames, the index covers {at}")
    err_path = d / ERRORS_JSONL
    if err_path.is_file() and err_path.stat().st_size != errors_size:
        raise AudioclError(
            f"{err_path}: {err_path.stat().st_size} bytes, but the shards' error files "
            f"hold {errors_size}"
        )


# --------------------------------------------------------------------------- summaries


def content_hash(store_dir: str | os.PathLike) -> str:
    """sha256 over the parameters, the index, the errors and every shard data file
    in shard order: equal hashes mean equal stores (run timings are not included)."""
    d = Path(store_dir)
    params = read_params(d)
    h = hashlib.sha256()
    h.update(canonical_json(params.to_dict()).encode("utf-8"))
    for name in (INDEX_JSONL, ERRORS_JSONL):
        path = d / name
        if not path.is_file():
            raise AudioclError(f"store at {d} is unfinished (no {name})")
        h.update(name.encode())
        h.update(_sha256_file(path).encode())
    for path in sorted((d / SHARDS_DIR).glob("shard-*")):
        if path.suffix in (".npy", ".flac") and not path.name.startswith("."):
            h.update(path.name.encode())
            h.update(_sha256_file(path).encode())
    return h.hexdigest()


def verify_store(store_dir: str | os.PathLike) -> list[str]:
    """Re-hash every shard file against its marker, and ``errors.jsonl`` against the
    shards' error files; returns the problems found (``[]``: intact). Reads every
    byte of the store (about one second per GB and core; see docs/reliability.md).
    """
    d = Path(store_dir)
    problems = []
    errors_hash = hashlib.sha256()
    for marker_path in sorted((d / SHARDS_DIR).glob("shard-*.done")):
        try:
            marker = _read_marker(marker_path)
        except AudioclError as err:
            problems.append(str(err))
            continue
        for name, info in marker["files"].items():
            f = d / SHARDS_DIR / name
            if not f.is_file():
                problems.append(f"{name}: missing")
            elif _sha256_file(f) != info.get("sha256"):
                problems.append(f"{name}: content differs from its marker")
            elif name.endswith(".errors.jsonl"):
                errors_hash.update(f.read_bytes())
    err_path = d / ERRORS_JSONL
    if err_path.is_file() and not problems and _sha256_file(err_path) != errors_hash.hexdigest():
        problems.append(f"{ERRORS_JSONL}: content differs from the shards' error files")
    return problems


def summarize_store(store_dir: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """Counts and statistics of a finished store, for ``audiocl info``; ``verify``
    re-hashes every file first (AudioclError naming the first damaged one)."""
    import time

    t0 = time.perf_counter()
    store = FeatureStore(store_dir, verify=verify)
    t_open = time.perf_counter() - t0
    params = store.params
    errors = store.errors()
    out: dict[str, Any] = {
        "kind": "feature_store",
        "path": str(store.dir),
        "items": len(store),
        "failed": len(errors),
        "failed_by_reason": dict(sorted(Counter(e.get("reason", "error") for e in errors).items())),
        "shards": len(list((store.dir / SHARDS_DIR).glob("shard-*.done"))),
        "stored": list(params.kinds),
        "dtype": params.dtype,
        "shard_size": params.shard_size,
        "frontend_hash": params.frontend_hash,
        "config": params.frontend,
    }
    if "logmel" in params.kinds and len(store):
        fr = store.frames_array
        hop = params.frontend.get("hop_length")
        out["frames"] = {
            "total": int(fr.sum()),
            "min": int(fr.min()),
            "max": int(fr.max()),
            "mean": float(fr.mean()),
            "median": float(statistics.median(fr.tolist())),
        }
        if hop:
            out["frames"]["seconds_total"] = float(fr.sum()) * hop / params.sample_rate
    if "waveform" in params.kinds and len(store):
        ns = store._samples
        out["duration_seconds"] = {
            "total": float(ns.sum()) / params.sample_rate,
            "min": float(ns.min()) / params.sample_rate,
            "max": float(ns.max()) / params.sample_rate,
        }
    files = [f for f in (store.dir / SHARDS_DIR).glob("shard-*") if f.is_file()]
    out["integrity"] = {
        "checked": "sha256 of every file" if verify else "sizes, headers, index (cheap)",
        "ok": True,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "seconds": round(t_open, 4),
    }
    return out
