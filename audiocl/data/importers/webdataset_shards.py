"""WebDataset tars read in place (LAION-Audio-630K / open_clip layout).

A sample is the tar members that share a key (the member name up to the first
dot of its last path component, webdataset's rule)::

    000000.tar: 17.flac  17.json  18.flac  18.json ...   (+ sizes.json beside the tars)

``<key>.json`` gives ``text`` (a caption or a list: the item's ``texts``) and
``tag`` (a label or a list: ``labels``); ``id``, ``speaker``, ``language`` and
``split`` are taken from it (or from its ``original_data``, as ``audiocl export
webdataset`` writes them), every other key is kept as a custom field.
``<key>.txt`` and ``<key>.cls`` (webdataset's plain-text caption and class
conventions) are read too. Json keys named like a manifest core field
(``path``, ``duration``, ...) are dropped: the member is the audio. The audio member (``flac``, ``wav``, ``ogg``,
``mp3``) is not copied: the item's ``path`` is the tar and its ``ref`` the
member's name, data offset and size (see :mod:`audiocl.data.manifest`), so a
worker decodes it with one seek and one read.

``root`` is a folder (every ``*.tar`` under it, sorted), one tar, a glob
(``shards/*.tar``) or a brace pattern (``shards/{000000..000099}.tar``).
Ids are the json's ``id`` when it has one, else ``<name>/<key>``. A sample
with metadata but no audio member follows ``on_missing`` (error: one line
naming the tar and key; skip: counted). Compressed tars (``.tar.gz``) have no
seekable members and are refused.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audiocl.data.importers._common import (
    AUDIO_EXTENSIONS,
    ImportStats,
    check_name,
    check_on_missing,
    finish,
    log,
)
from audiocl.data.manifest import RESERVED_FIELDS, AudioItem
from audiocl.data.webdataset import expand_shards
from audiocl.errors import InputError

NAME = "webdataset"
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")
_LIFTED = ("speaker", "language", "split")


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """The tars named by ``root`` (absolute): a folder searched with its sub-folders,
    a tar, a glob or a brace pattern (:func:`audiocl.data.webdataset.expand_shards`)."""
    return [Path(os.path.abspath(p)) for p in expand_shards(str(root), NAME, recursive=True)]


def split_key(member: str) -> tuple[str, str] | None:
    """``("dir/17", "flac")`` for ``dir/17.flac``; None for a name without a dot."""
    m = _KEY_EXT.match(member)
    return None if m is None else (m.group(1), m.group(2))


def _strings(value: Any, tar: Path, member: str, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value if str(v).strip()]
    raise InputError(f"{tar}:{member}", f"expected a string or a list of strings, got {value!r}"[:160],
                     field=what)


def _json(tar: Path, member: str, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{tar}:{member}", f"invalid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{tar}:{member}", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _samples(tar: Path, read_audio: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, {"audio": TarInfo, "json": bytes, "txt": bytes, "cls": bytes, "audio_bytes"})``
    per sample, in tar order; the members of one key must be adjacent (webdataset's rule)."""
    try:
        tf = tarfile.open(tar, mode="r:")
    except tarfile.ReadError as err:
        with open(tar, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz or tar.name.endswith((".gz", ".tgz")):
            raise InputError(str(tar), "compressed tar: its members cannot be read in place; "
                             "decompress it (gunzip) first") from None
        raise InputError(str(tar), f"not a tar file ({err})") from None
    with tf:
        key: str | None = None
        parts: dict[str, Any] = {}
        try:
            for m in tf:
                if not m.isfile():
                    continue
                kx = split_key(m.name)
                if kx is None:
                    continue
                k, ext = kx
                if k != key:
                    if key is not None:
                        yield key, parts
                    key, parts = k, {}
                ext = ext.lower()
                if ext in AUDIO_EXTENSIONS:
                    if "audio" in parts:
                        log.warning("%s: sample %s has two audio members; using %s",
                                    tar, k, parts["audio"].name)
                        continue
                    parts["audio"] = m
                    if read_audio:  # for the header probe; otherwise the data is skipped
                        parts["audio_bytes"] = tf.extractfile(m).read()  # type: ignore[union-attr]
                elif ext in ("json", "txt", "cls"):
                    parts[ext] = (m.name, tf.extractfile(m).read())  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as err:
            raise InputError(str(tar), f"damaged tar after {key!r} ({type(err).__name__}: {err})") from None
        if key is not None:
            yield key, parts


def prepare_webdataset(
    root: str | os.PathLike,
    *,
    name: str = NAME,
    license: str | None = None,
    split: str | None = None,
    language: str | None = None,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of WebDataset tars, pointing into them (see the module docstring)."""
    check_on_missing(on_missing)
    check_name(name)
    tars = shard_paths(root)
    st = stats if stats is not None else ImportStats()
    st.dataset = name
    return _items(tars, name, license, split, language, probe, on_missing, st)


def _items(
    tars: list[Path], name: str, license: str | None, split: str | None, language: str | None,
    probe: bool, on_missing: str, st: ImportStats,
) -> Iterator[AudioItem]:
    from audiocl.audio.io import AudioDecodeError
    from audiocl.audio.io import probe as probe_bytes

    seen: dict[str, str] = {}
    for tar in tars:
        for key, parts in _samples(tar, probe):
            meta: dict[str, Any] = {}
            if "json" in parts:
                meta = _json(tar, *parts["json"])
            audio = parts.get("audio")
            if audio is None:
                found = ", ".join(n for n, _ in (parts[e] for e in ("json", "txt", "cls") if e in parts))
                if on_missing == "error":
                    raise InputError(
                        str(tar), f"sample {key!r} has no audio member (found {found}); "
                        "use --on-missing skip to skip it",
                    )
                st.add_missing(f"{tar}:{key}")
                continue
            original = meta.get("original_data") if isinstance(meta.get("original_data"), dict) else {}
            jname = parts["json"][0] if "json" in parts else audio.name
            texts = _strings(meta.get("text"), tar, jname, "text")
            labels = _strings(meta.get("tag"), tar, jname, "tag")
            if "txt" in parts:
                texts += [t for t in parts["txt"][1].decode("utf-8", "replace").splitlines() if t.strip()]
            if "cls" in parts:
                labels += [t.strip() for t in parts["cls"][1].decode("utf-8", "replace").splitlines() if t.strip()]
            ident = meta.get("id") if isinstance(meta.get("id"), str) and meta.get("id") else f"{name}/{key}"
            if ident in seen:
                raise InputError(str(tar), f"id {ident!r} of sample {key!r} was already used by "
                                 f"{seen[ident]}", field="id")
            seen[ident] = f"{tar.name}:{key}"
            lifted = {f: (meta.get(f) if isinstance(meta.get(f), str) else original.get(f))
                      for f in _LIFTED}
            custom = {k: v for k, v in meta.items()
                      if k not in ("text", "tag", "id", *_LIFTED) and k not in RESERVED_FIELDS}
            facts: dict[str, Any] = {}
            if probe:
                try:
                    info = probe_bytes(parts["audio_bytes"], name=f"{tar}:{audio.name}")
                    facts = {k: info[k] for k in ("sampling_rate", "num_samples", "channels", "duration")}
                except AudioDecodeError:
                    st.add_unprobed(f"{tar}:{audio.name}")
                    log.warning("cannot read the header of %s:%s; listed without duration", tar, audio.name)
            st.items += 1
            yield AudioItem(
                id=ident, path=str(tar),
                ref={"kind": "tar", "member": audio.name, "offset": audio.offset_data, "size": audio.size},
                texts=texts, labels=labels,
                split=split if split is not None else _str_or_none(lifted["split"]),
                language=language if language is not None else _str_or_none(lifted["language"]),
                speaker=_str_or_none(lifted["speaker"]),
                source=name, license=license, custom=custom, **facts,
            )
    finish(st)


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None
