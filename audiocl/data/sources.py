"""Decode a manifest item wherever its audio lives: a file, a tar member, an arrow row.

Every caller that turns a manifest item into samples goes through
:func:`load_item` (or :func:`load_item_mono`): extraction, the WebDataset
export and evaluation from files. An item is an :class:`~audiocl.data.manifest.AudioItem`
or its dict form (the shard specs of :mod:`audiocl.data.extract`); its
``ref`` field (see :mod:`audiocl.data.manifest`) says where inside ``path``
the encoded audio is:

- no ``ref``: ``path`` is the sound file;
- ``tar``: one read of ``[offset - 512, offset + size)``: the member's own
  header block (checked against ``member`` and ``size``) and its bytes;
- ``arrow``: row ``row`` of the ``Audio`` column ``column`` (``{bytes, path}``)
  of an arrow (IPC file or stream, as ``datasets`` writes them) or parquet
  file, opened memory-mapped once per process and kept in a small cache.

The bytes are decoded by :func:`audiocl.audio.io.load_audio` under a name that
says where they came from (``shard.tar:key.flac``, ``data.arrow:row 41``), so
errors and ``errors.jsonl`` lines name the member or row. A member or row that
is not there is :class:`~audiocl.audio.io.AudioDecodeError` ``missing``.
"""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from typing import Any

import numpy as np

from audiocl.audio.io import AudioDecodeError, check_file, load_audio, probe, resample, to_mono

_TAR_BLOCK = tarfile.BLOCKSIZE
_TABLES: OrderedDict[str, Any] = OrderedDict()
_MAX_TABLES = 8  # open arrow/parquet files kept per process (memory maps: cheap)


def _get(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def item_name(item: Any) -> str:
    """What errors call the item's audio: ``path``, ``path:member`` or ``path:row N``."""
    ref = _get(item, "ref")
    path = str(_get(item, "path"))
    if not ref:
        return path
    if ref["kind"] == "tar":
        return f"{path}:{ref['member']}"
    return f"{path}:row {ref['row']}"


def _tar_member(path: str, ref: dict[str, Any], name: str) -> bytes:
    check_file(path)
    offset, size, member = int(ref["offset"]), int(ref["size"]), str(ref["member"])
    if offset < _TAR_BLOCK or offset % _TAR_BLOCK:
        raise AudioDecodeError(name, "missing", f"offset {offset} is not a tar member's data offset")
    with open(path, "rb") as f:
        f.seek(offset - _TAR_BLOCK)
        blob = f.read(_TAR_BLOCK + size)
    stale = "the tar changed since the manifest was made"
    if len(blob) < _TAR_BLOCK:
        raise AudioDecodeError(name, "missing", f"no member at offset {offset} ({stale})")
    try:
        head = tarfile.TarInfo.frombuf(blob[:_TAR_BLOCK], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        raise AudioDecodeError(name, "missing", f"no member header before offset {offset} ({stale})") from None
    # a GNU/pax long name is in an earlier block; this header holds its first 100 bytes
    if head.size != size or not member.startswith(head.name.rstrip("\0")[:99]):
        raise AudioDecodeError(
            name, "missing", f"offset {offset} holds {head.name!r} ({head.size} bytes), "
            f"not {member!r} ({size} bytes): {stale}",
        )
    data = blob[_TAR_BLOCK:]
    if len(data) < size:
        raise AudioDecodeError(name, "truncated", f"the member has {len(data)} of its {size} bytes")
    return data


def open_table(path: str) -> Any:
    """The arrow table of ``path`` (memory-mapped; parquet read once), cached per process."""
    key = os.path.abspath(path)
    table = _TABLES.get(key)
    if table is not None:
        _TABLES.move_to_end(key)
        return table
    from audiocl.extras import require

    pa = require("pyarrow", "hf", feature="reading arrow/parquet audio")
    try:
        if path.endswith(".parquet"):
            pq = require("pyarrow.parquet", "hf", feature="reading parquet audio")
            table = pq.read_table(path, memory_map=True)
        else:
            source = pa.memory_map(path)
            try:
                table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowException) as err:
        raise AudioDecodeError(path, "unreadable", f"not an arrow/parquet file ({err})") from None
    _TABLES[key] = table
    if len(_TABLES) > _MAX_TABLES:
        _TABLES.popitem(last=False)
    return table


def arrow_audio_cell(table: Any, row: int, column: str) -> dict[str, Any] | None:
    """The ``{"bytes", "path"}`` value of an ``Audio`` cell (None when null)."""
    value = table.column(column)[row].as_py()
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):  # a plain binary column
        return {"bytes": bytes(value), "path": None}
    if isinstance(value, dict):
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    raise TypeError(f"column {column!r} holds {type(value).__name__}, not audio")


def _arrow_row(path: str, ref: dict[str, Any], name: str) -> bytes | str:
    check_file(path)
    table = open_table(path)
    row, column = int(ref["row"]), str(ref["column"])
    if column not in table.column_names:
        raise AudioDecodeError(name, "missing", f"no column {column!r} (the file changed?)")
    if row >= table.num_rows:
        raise AudioDecodeError(name, "missing", f"the file has {table.num_rows} rows")
    try:
        cell = arrow_audio_cell(table, row, column)
    except TypeError as err:
        raise AudioDecodeError(name, "unreadable", str(err)) from None
    if cell is None or (not cell["bytes"] and not cell["path"]):
        raise AudioDecodeError(name, "missing", "the row has no audio (null)")
    if cell["bytes"]:
        return bytes(cell["bytes"])
    # an Audio cell holding only a path: relative to the arrow file's folder
    p = str(cell["path"])
    return p if os.path.isabs(p) else os.path.join(os.path.dirname(path), p)


def item_source(item: Any) -> str | bytes:
    """The item's encoded audio: a file path, or the bytes of its member/row."""
    path = str(_get(item, "path"))
    ref = _get(item, "ref")
    if not ref:
        return path
    name = item_name(item)
    if ref["kind"] == "tar":
        return _tar_member(path, ref, name)
    return _arrow_row(path, ref, name)


def load_item(item: Any, *, max_duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the item's segment: float32 ``[channels, samples]`` and its rate.

    With ``max_duration`` a header probe rejects a long clip (``too_long``)
    before it is decoded.
    """
    src = item_source(item)
    name = item_name(item)
    start = float(_get(item, "start") or 0.0)
    duration = _get(item, "duration")
    if max_duration is not None:
        info = probe(src, name=name)
        seg = info["duration"] - start if duration is None else min(duration, info["duration"] - start)
        if seg > max_duration:
            raise AudioDecodeError(name, "too_long", f"{seg:.3f} s > max_duration {max_duration} s")
    return load_audio(src, start=start, duration=duration, name=name)


def load_item_mono(item: Any, sample_rate: int) -> np.ndarray:
    """:func:`load_item` mixed to mono and resampled: float32 ``[samples]``."""
    x, sr = load_item(item)
    return resample(to_mono(x), sr, sample_rate)
