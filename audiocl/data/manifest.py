"""Manifests: one JSON object a line, one line an audio item.

A manifest is a JSONL file (optionally gzip-compressed) whose lines each
describe one clip::

    {"id": "esc50/1-100032-A-0", "path": "audio/1-100032-A-0.wav", "start": 0.0,
     "duration": 5.0, "sampling_rate": 44100, "num_samples": 220500, "channels": 1,
     "texts": [], "labels": ["dog"], "split": null, "language": null,
     "speaker": null, "source": "esc50", "license": "CC BY-NC 3.0",
     "fold": 1, "category": "dog"}

Field names follow lhotse's ``Recording``/``SupervisionSegment`` where a field
means the same thing (``sampling_rate``, ``num_samples``, ``duration``,
``start``, ``language``, ``speaker``, ``custom``). Any field that is not one of
the core fields (``fold``, ``category``, another modality's path, ...) is kept
in :attr:`AudioItem.custom` and written back at the top level, so unknown
fields survive a read/write round trip. A lhotse-style nested ``"custom"``
object is accepted on read and merged into the same dictionary.

An item whose audio lives inside a container names it with the optional
``ref`` field (written only when set, so ordinary file items are unchanged);
``path`` is then the container file::

    "path": "shards/000003.tar",
    "ref": {"kind": "tar", "member": "sample-17.flac", "offset": 10752, "size": 48213}

    "path": "hf/train/data-00000-of-00001.arrow",
    "ref": {"kind": "arrow", "row": 41, "column": "audio"}

``tar``: ``offset`` is the byte offset of the member's data in the
(uncompressed) tar and ``size`` its length, so decoding is one seek and one
read; the 512-byte header just before ``offset`` is checked against
``member``/``size``, so a tar rewritten since the manifest was made is a
``missing`` error, not the wrong audio. ``arrow``: row ``row`` (0-based, in
this file) of ``column``, an ``Audio`` struct ``{bytes, path}`` of a Hugging
Face arrow or parquet file. ``start``/``duration`` select a segment of the
referenced audio as for a file. :mod:`audiocl.data.sources` decodes every kind.

Reading is lazy (:func:`read_manifest` streams line by line, so manifests of
millions of lines never sit in memory) and strict: every problem raises
:class:`~audiocl.errors.InputError` naming the file, the 1-based line and the
field. Writing is atomic (:func:`write_manifest`, :class:`ManifestWriter`): the
lines go to a temporary file in the destination folder, which is fsynced and
renamed over the destination only when every item was valid, so a failed write
leaves no file and never clobbers an existing one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any, TypeVar

from audiocl.errors import AudioclError, InputError
from audiocl.fsutil import tmp_path

CORE_FIELDS: tuple[str, ...] = (
    "id",
    "path",
    "start",
    "duration",
    "sampling_rate",
    "num_samples",
    "channels",
    "texts",
    "labels",
    "split",
    "language",
    "speaker",
    "source",
    "license",
)
#: optional core fields, written only when set (so items without them keep their bytes)
OPTIONAL_FIELDS: tuple[str, ...] = ("ref",)
_RESERVED = frozenset(CORE_FIELDS) | frozenset(OPTIONAL_FIELDS) | {"custom"}
#: names that are not custom fields (importers drop source columns named so)
RESERVED_FIELDS = _RESERVED
#: ``ref`` kinds and their required fields with types
REF_KINDS: dict[str, dict[str, type]] = {
    "tar": {"member": str, "offset": int, "size": int},
    "arrow": {"row": int, "column": str},
}
_GZIP_MAGIC = b"\x1f\x8b"
_GZ_DAMAGED = "the gzip data is damaged"
# how far a segment may run past the probed end of its file: MP3 headers give
# approximate lengths (encoder delay and padding are ~1-2 frames of 1152 samples)
SEGMENT_TOLERANCE_S = 0.05


class _ItemInvalid(Exception):
    """Internal: a validation failure before the file/line are known."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    # errors are one line; a whole caption list or blob pasted into one is unreadable
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_str(value: Any, name: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _ItemInvalid(f"expected a string, got {_type_name(value)} {_short(value)}", name)
    return value


def _check_number(value: Any, name: str, *, optional: bool, minimum: float) -> float | None:
    if value is None and optional:
        return None
    # bool is an int subclass; true/false in a duration field is a mistake
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ItemInvalid(f"expected a number, got {_type_name(value)} {_short(value)}", name)
    value = float(value)
    if not math.isfinite(value):
        raise _ItemInvalid(f"must be finite, got {_short(value)}", name)
    if value < minimum:
        raise _ItemInvalid(f"must be >= {minimum:g}, got {_short(value)}", name)
    return value


def _check_int(value: Any, name: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _ItemInvalid(f"expected an integer, got bool {_short(value)}", name)
    # tools such as pandas write 16000.0 for integer columns; accept those exactly
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise _ItemInvalid(f"expected an integer, got {_type_name(value)} {_short(value)}", name)
    if value < minimum:
        raise _ItemInvalid(f"must be >= {minimum}, got {_short(value)}", name)
    return value


def _check_str_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _ItemInvalid(
            f"expected a list of strings, got {_type_name(value)} {_short(value)}", name
        )
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise _ItemInvalid(f"expected a string, got {_type_name(v)} {_short(v)}", f"{name}[{i}]")
    return list(value)


@dataclass
class AudioItem:
    """One clip of a manifest (see the module docstring for the JSON form).

    ``start`` and ``duration`` (seconds) select a segment of ``path``;
    ``duration=None`` means "to the end of the file". ``sampling_rate``,
    ``num_samples`` and ``channels`` describe the whole file as probed at
    import time (None when unknown). ``ref`` names the audio inside the
    container ``path`` (a tar member, an arrow row; see the module docstring),
    None for a plain file. ``custom`` holds every other field.
    """

    id: str
    path: str
    start: float = 0.0
    duration: float | None = None
    sampling_rate: int | None = None
    num_samples: int | None = None
    channels: int | None = None
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    split: str | None = None
    language: str | None = None
    speaker: str | None = None
    source: str | None = None
    license: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    ref: dict[str, Any] | None = None

    def validate(self) -> None:
        """Raise ``InputError`` (no path/line) if a field has a wrong type or value."""
        try:
            self._validated_copy()
        except _ItemInvalid as err:
            raise InputError(None, err.message, field=err.field) from None

    def _validated_copy(self) -> AudioItem:
        return _build(self.__dict__, self.custom)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: core fields first (None as null), then custom fields.

        Raises ``InputError`` when the item is invalid, so nothing invalid is
        ever written.
        """
        try:
            item = self._validated_copy()
        except _ItemInvalid as err:
            raise InputError(None, err.message, field=err.field) from None
        out: dict[str, Any] = {name: getattr(item, name) for name in CORE_FIELDS}
        out["texts"] = list(item.texts)
        out["labels"] = list(item.labels)
        if item.ref is not None:
            out["ref"] = dict(item.ref)
        out.update(item.custom)
        return out

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], *, path: str | os.PathLike | None = None, line: int | None = None
    ) -> AudioItem:
        """Build and validate an item; errors name ``path``, ``line`` and the field."""
        try:
            return cls._from_dict(d)
        except _ItemInvalid as err:
            raise InputError(
                None if path is None else str(path), err.message, line=line, field=err.field
            ) from None

    @classmethod
    def _from_dict(cls, d: Any) -> AudioItem:
        if not isinstance(d, dict):
            raise _ItemInvalid(f"expected a JSON object, got {_type_name(d)}", None)
        for required in ("id", "path"):
            if required not in d:
                raise _ItemInvalid("required field is missing", required)
        custom = {k: v for k, v in d.items() if k not in _RESERVED}
        nested = d.get("custom")
        if nested is not None:
            if not isinstance(nested, dict):
                raise _ItemInvalid(f"expected an object, got {_type_name(nested)}", "custom")
            for key, value in nested.items():
                if key in custom:
                    raise _ItemInvalid("given both at top level and inside 'custom'", key)
                custom[key] = value
        return _build(d, custom)

    def get(self, name: str, default: Any = None) -> Any:
        """A core field or a custom field by name (``item.get("fold")``)."""
        if name in _RESERVED and name != "custom":
            return getattr(self, name)
        return self.custom.get(name, default)

    @property
    def end(self) -> float | None:
        """End time in seconds within the file (None when the duration is unknown)."""
        return None if self.duration is None else self.start + self.duration


def _build(v: dict[str, Any], custom: Any) -> AudioItem:
    """One validated ``AudioItem`` from field values (a JSON dict or an item's ``__dict__``)."""
    ident = _check_str(v.get("id"), "id", optional=False)
    if not ident:
        raise _ItemInvalid("must not be empty", "id")
    path = _check_str(v.get("path"), "path", optional=False)
    if not path:
        raise _ItemInvalid("must not be empty", "path")
    if not isinstance(custom, dict):
        raise _ItemInvalid(f"expected a dict, got {_type_name(custom)}", "custom")
    if not _RESERVED.isdisjoint(custom) or not all(isinstance(k, str) for k in custom):
        for key in custom:
            if not isinstance(key, str):
                raise _ItemInvalid(f"custom field names must be strings, got {key!r}", "custom")
            if key in _RESERVED:
                raise _ItemInvalid(f"'{key}' is a core field and cannot be in custom", key)
    start = v.get("start")
    start = 0.0 if start is None else _check_number(start, "start", optional=False, minimum=0.0)
    duration = _check_number(v.get("duration"), "duration", optional=True, minimum=0.0)
    sampling_rate = _check_int(v.get("sampling_rate"), "sampling_rate", minimum=1)
    num_samples = _check_int(v.get("num_samples"), "num_samples", minimum=0)
    if sampling_rate and num_samples is not None:
        file_s = num_samples / sampling_rate
        if start > file_s + SEGMENT_TOLERANCE_S:
            raise _ItemInvalid(f"starts at {start:g} s, past the file's end ({file_s:g} s)", "start")
        if duration is not None and start + duration > file_s + SEGMENT_TOLERANCE_S:
            raise _ItemInvalid(
                f"segment {start:g}+{duration:g} s ends past the file's end ({file_s:g} s)",
                "duration",
            )
    return AudioItem(
        id=ident,
        path=path,
        start=start,
        duration=duration,
        sampling_rate=sampling_rate,
        num_samples=num_samples,
        channels=_check_int(v.get("channels"), "channels", minimum=1),
        texts=_check_str_list(v.get("texts"), "texts"),
        labels=_check_str_list(v.get("labels"), "labels"),
        split=_check_str(v.get("split"), "split", optional=True),
        language=_check_str(v.get("language"), "language", optional=True),
        speaker=_check_str(v.get("speaker"), "speaker", optional=True),
        source=_check_str(v.get("source"), "source", optional=True),
        license=_check_str(v.get("license"), "license", optional=True),
        custom=dict(custom),
        ref=_check_ref(v.get("ref")),
    )


def _check_ref(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _ItemInvalid(f"expected an object, got {_type_name(value)} {_short(value)}", "ref")
    kind = value.get("kind")
    if kind not in REF_KINDS:
        raise _ItemInvalid(
            f"kind must be one of {', '.join(REF_KINDS)}, got {_short(kind)}", "ref.kind"
        )
    want = REF_KINDS[kind]
    extra = sorted(set(value) - set(want) - {"kind"})
    if extra:
        raise _ItemInvalid(f"unknown field(s) {', '.join(extra)} for kind {kind!r}", "ref")
    for key, typ in want.items():
        if key not in value:
            raise _ItemInvalid("required field is missing", f"ref.{key}")
        if typ is int:
            _check_int(value[key], f"ref.{key}", minimum=0)
            if value[key] is None:
                raise _ItemInvalid("expected an integer, got null", f"ref.{key}")
        elif not isinstance(value[key], str) or not value[key]:
            raise _ItemInvalid(f"expected a non-empty string, got {_short(value[key])}", f"ref.{key}")
    return {"kind": kind, **{k: (int(value[k]) if want[k] is int else value[k]) for k in want}}


# ---------------------------------------------------------------- reading


def _is_remote(path: str) -> bool:
    return "://" in path


def _open_binary(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    # sniff the magic bytes rather than trust the suffix: both mistakes happen
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    return open(path, "rb")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioclError(f"manifest not found: {path}")
    if path.is_dir():
        raise AudioclError(
            f"manifest is a directory, expected a .jsonl or .jsonl.gz file: {path} (a "
            "WebDataset, Hugging Face or lhotse corpus? make a manifest of it first: "
            "audiocl prepare webdataset|hf|lhotse --root DIR --out M.jsonl)"
        )


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys without a word; a manifest line with
    # "labels" twice is a mistake (a merge gone wrong), not something to guess about
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def _gzip_damage(p: Path) -> str | None:
    """Why the gzip file ``p`` is damaged (CRC, length, deflate error), or None if it
    decompresses cleanly. Only called once a line has failed: gzip checks its CRC at
    the end of the stream, so a flipped byte first shows as a garbled line."""
    try:
        with open(p, "rb") as raw:
            if raw.read(2) != _GZIP_MAGIC:
                return None
        with gzip.open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        return f"{type(err).__name__}: {err}"
    return None


T = TypeVar("T")


def _naming_gzip_damage(p: Path, rows: Iterator[T]) -> Iterator[T]:
    """Pass ``rows`` through; an ``InputError`` from a damaged gzip says so (a garbled
    line may only fail validation, which alone would not point at the damage)."""
    try:
        yield from rows
    except InputError as err:
        damage = None if _GZ_DAMAGED in err.message else _gzip_damage(p)
        if damage is None:
            raise
        raise InputError(
            str(p), f"{_GZ_DAMAGED} ({damage}); {err.message}", line=err.line,
            field=err.field,
        ) from None


def _iter_dicts(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return _naming_gzip_damage(p, _iter_dicts_unchecked(p))


def _iter_dicts_unchecked(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # bytes are decoded a line at a time so that a bad byte is blamed on its own line
    with _open_binary(p) as fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except (OSError, EOFError, zlib.error) as err:
                # truncated or corrupt gzip stream (a flipped byte is a zlib.error)
                raise InputError(
                    str(p), f"cannot read: {_GZ_DAMAGED} ({type(err).__name__}: {err})",
                    line=lineno + 1,
                ) from None
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(str(p), f"not UTF-8 text ({err.reason})", line=lineno) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_object_no_duplicates)
            except json.JSONDecodeError as err:
                raise InputError(
                    str(p), f"invalid JSON: {err.msg} (column {err.colno})", line=lineno
                ) from None
            except _DuplicateKey as err:
                raise InputError(
                    str(p), f"the key {err.key!r} occurs twice in one object (JSON readers "
                    "disagree on which value wins)", line=lineno, field=err.key,
                ) from None
            except RecursionError:
                raise InputError(str(p), "JSON nested too deeply", line=lineno) from None
            if not isinstance(obj, dict):
                raise InputError(
                    str(p), f"expected a JSON object, got {_type_name(obj)}", line=lineno
                )
            yield lineno, obj


def read_manifest(
    path: str | os.PathLike,
    *,
    resolve_paths: bool = True,
    check_duplicates: bool = True,
) -> Iterator[AudioItem]:
    """Stream the items of a ``.jsonl`` or ``.jsonl.gz`` manifest.

    Lazy: one line is parsed per item pulled. Relative audio paths are made
    absolute against the manifest's folder (``resolve_paths=False`` keeps them
    as written). Duplicate ids raise ``InputError`` naming both lines (the
    reader keeps a set of the ids seen, a few tens of bytes per item).
    A missing file raises ``AudioclError`` at the call, not at the first item.
    """
    p = Path(path)
    _check_exists(p)
    return _read_items(p, resolve_paths, check_duplicates)


def _read_items(p: Path, resolve_paths: bool, check_duplicates: bool) -> Iterator[AudioItem]:
    return _naming_gzip_damage(p, _read_items_unchecked(p, resolve_paths, check_duplicates))


def _read_items_unchecked(
    p: Path, resolve_paths: bool, check_duplicates: bool
) -> Iterator[AudioItem]:
    base = os.path.dirname(os.path.abspath(p))
    seen: dict[str, int] = {}
    for lineno, obj in _iter_dicts(p):
        item = AudioItem.from_dict(obj, path=p, line=lineno)
        if check_duplicates:
            first = seen.get(item.id)
            if first is not None:
                raise InputError(
                    str(p), f"duplicate id {item.id!r} (first on line {first})",
                    line=lineno, field="id",
                )
            seen[item.id] = lineno
        if resolve_paths and not os.path.isabs(item.path) and not _is_remote(item.path):
            item.path = os.path.normpath(os.path.join(base, item.path))
        yield item


def load_manifest(path: str | os.PathLike, **kw: Any) -> list[AudioItem]:
    """All items of a manifest in a list (for small manifests: eval sets, tests)."""
    return list(read_manifest(path, **kw))


def count_manifest(path: str | os.PathLike) -> int:
    """Number of non-blank lines, without parsing JSON."""
    p = Path(path)
    _check_exists(p)
    n = 0
    with _open_binary(p) as fh:
        for line in fh:
            if line.strip():
                n += 1
    return n


# ---------------------------------------------------------------- writing


class ManifestWriter:
    """Write items one by one; the file appears only if the block succeeds.

    ::

        with ManifestWriter("train.jsonl.gz") as w:
            for item in items:
                w.write(item)

    Lines go to a hidden temporary file in the destination's folder; on a
    clean exit it is flushed, fsynced and renamed over ``path`` (``os.replace``
    is atomic on POSIX and Windows). On any exception, including an invalid
    item or a full disk, the temporary file is removed and ``path`` is left
    untouched (a process killed outright may leave the hidden
    ``.<name>.tmp-<pid>`` behind, never a partial manifest; the next writer of
    the same path removes it). A
    ``.gz`` suffix gives gzip output with a zero timestamp, so the same items
    always give the same bytes. ``relative_to_manifest=True`` writes audio
    paths under the manifest's folder relative to it, so the folder can move.
    """

    def __init__(self, path: str | os.PathLike, *, relative_to_manifest: bool = False) -> None:
        self.path = Path(path)
        self.relative_to_manifest = relative_to_manifest
        self.count = 0
        self._ids: set[str] = set()
        self._tmp: str | None = None
        self._raw: IO[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._base = os.path.dirname(os.path.abspath(self.path))

    def __enter__(self) -> ManifestWriter:
        parent = self.path.parent
        if not parent.is_dir():
            raise AudioclError(f"output folder does not exist: {parent}")
        if self.path.is_dir():
            raise AudioclError(f"output path is a directory: {self.path}")
        remove_stale_tmp_of(self.path)
        tmp = tmp_path(self.path)
        self._tmp = str(tmp)
        try:
            self._raw = open(tmp, "wb")
        except OSError as err:
            self._tmp = None
            raise AudioclError(f"{self.path}: cannot write ({err.strerror or err})") from None
        if self.path.name.endswith(".gz"):
            self._out = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6
            )
        else:
            self._out = self._raw
        return self

    def write(self, item: AudioItem) -> None:
        """Validate and append one item (``InputError`` names the output line)."""
        if self._out is None:
            raise RuntimeError("ManifestWriter.write called outside its with-block")
        line = self.count + 1
        try:
            d = item.to_dict()
        except InputError as err:
            raise InputError(str(self.path), err.message, line=line, field=err.field) from None
        if d["id"] in self._ids:
            raise InputError(str(self.path), f"duplicate id {d['id']!r}", line=line, field="id")
        self._ids.add(d["id"])
        if self.relative_to_manifest:
            d["path"] = self._relative(d["path"])
        try:
            text = json.dumps(d, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InputError(
                str(self.path), f"value cannot be written as JSON: {err}", line=line
            ) from None
        try:
            self._out.write(text.encode("utf-8") + b"\n")
        except OSError as err:  # disk full, quota: __exit__ removes the temporary file
            raise AudioclError(f"{self.path}: cannot write ({err.strerror or err})") from None
        self.count += 1

    def _relative(self, p: str) -> str:
        if _is_remote(p) or not os.path.isabs(p):
            return p
        rel = os.path.relpath(p, self._base)
        return p if rel.startswith("..") else rel

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                assert self._out is not None and self._raw is not None
                try:
                    if self._out is not self._raw:
                        self._out.close()  # writes the gzip trailer, leaves raw open
                    self._raw.flush()
                    os.fsync(self._raw.fileno())
                    self._raw.close()
                    os.replace(self._tmp, self.path)
                except OSError as err:  # disk full at the last block: nothing is left
                    raise AudioclError(
                        f"{self.path}: cannot write ({err.strerror or err})"
                    ) from None
                self._tmp = None
                _fsync_dir(self.path.parent)
        finally:
            if self._tmp is not None:
                for fh in (self._out, self._raw):
                    try:
                        if fh is not None:
                            fh.close()
                    except Exception:
                        pass
                try:
                    os.unlink(self._tmp)
                except FileNotFoundError:
                    pass
                self._tmp = None


def remove_stale_tmp_of(path: Path) -> None:
    """Remove the temporary files an earlier writer of ``path`` left when it was
    killed (``.<name>.tmp-<pid>`` with a pid that no longer runs)."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not possible on every platform
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(
    items: Iterable[AudioItem], path: str | os.PathLike, *, relative_to_manifest: bool = False
) -> int:
    """Write ``items`` atomically to ``path`` (``.jsonl`` or ``.jsonl.gz``); return the count.

    If any item is invalid (or the iterable raises), ``InputError`` (or the
    original exception) propagates, no file is created and an existing file
    at ``path`` keeps its old content.
    """
    with ManifestWriter(path, relative_to_manifest=relative_to_manifest) as w:
        for item in items:
            w.write(item)
    return w.count


# ---------------------------------------------------------------- summary


def summarize_manifest(path: str | os.PathLike, *, top: int = 20) -> dict[str, Any]:
    """Counts, durations, sample-rate/channel/label/split histograms of a manifest.

    One streaming pass. Durations fall back to ``num_samples / sampling_rate``
    when ``duration`` is missing; items with neither are counted in
    ``duration.unknown``. ``labels.top`` holds the ``top`` most frequent labels.
    """
    return summarize_items(read_manifest(path, resolve_paths=False), path, top=top)


def summarize_items(
    items: Iterable[AudioItem], path: str | os.PathLike, *, top: int = 20, kind: str = "manifest"
) -> dict[str, Any]:
    """:func:`summarize_manifest` of any items (an importer's, read in place);
    ``kind`` says what ``path`` is (``manifest``, ``webdataset``, ``hf``, ``lhotse``)."""
    n = 0
    total = 0.0
    dmin = math.inf
    dmax = -math.inf
    known = 0
    rates: Counter[str] = Counter()
    chans: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    texts_per: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    n_texts = 0
    for item in items:
        n += 1
        dur = item.duration
        if dur is None and item.num_samples is not None and item.sampling_rate:
            dur = max(item.num_samples / item.sampling_rate - item.start, 0.0)
        if dur is not None:
            known += 1
            total += dur
            dmin = min(dmin, dur)
            dmax = max(dmax, dur)
        rates[str(item.sampling_rate) if item.sampling_rate else "unknown"] += 1
        chans[str(item.channels) if item.channels else "unknown"] += 1
        labels.update(item.labels)
        splits[item.split if item.split is not None else "none"] += 1
        texts_per[len(item.texts)] += 1
        n_texts += len(item.texts)
        sources[item.source if item.source is not None else "none"] += 1
    return {
        "path": str(path),
        "kind": kind,
        "items": n,
        "duration": {
            "total_s": total,
            "total_h": total / 3600.0,
            "mean_s": total / known if known else None,
            "min_s": dmin if known else None,
            "max_s": dmax if known else None,
            "unknown": n - known,
        },
        "sampling_rate": dict(sorted(rates.items(), key=lambda kv: (-kv[1], kv[0]))),
        "channels": dict(sorted(chans.items(), key=lambda kv: (-kv[1], kv[0]))),
        "labels": {
            "distinct": len(labels),
            "total": sum(labels.values()),
            "top": dict(labels.most_common(top)),
        },
        "splits": dict(sorted(splits.items())),
        "texts": {
            "total": n_texts,
            "mean_per_item": n_texts / n if n else 0.0,
            "per_item": {str(k): v for k, v in sorted(texts_per.items())},
        },
        "sources": dict(sorted(sources.items())),
    }


def format_manifest_summary(s: dict[str, Any]) -> str:
    """Human-readable text for :func:`summarize_manifest`'s dictionary."""

    def hist(d: dict[str, int]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"

    def sec(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f} s"

    d = s["duration"]
    lines = [
        f"{s.get('kind', 'manifest')}: {s['path']}",
        f"items: {s['items']}",
        f"duration: total {d['total_s']:.1f} s ({d['total_h']:.3f} h), mean {sec(d['mean_s'])}, "
        f"min {sec(d['min_s'])}, max {sec(d['max_s'])}"
        + (f", unknown for {d['unknown']} items" if d["unknown"] else ""),
        f"sampling rates: {hist(s['sampling_rate'])}",
        f"channels: {hist(s['channels'])}",
        f"splits: {hist(s['splits'])}",
        f"sources: {hist(s['sources'])}",
        f"texts: {s['texts']['total']} ({s['texts']['mean_per_item']:.2f} per item; "
        f"items by count: {hist(s['texts']['per_item'])})",
        f"labels: {s['labels']['distinct']} distinct, {s['labels']['total']} assigned",
    ]
    top = s["labels"]["top"]
    if top:
        width = max(len(k) for k in top)
        lines.append(f"top {len(top)} labels:")
        lines.extend(f"  {k:<{width}}  {v}" for k, v in top.items())
    return "\n".join(lines)
