"""Importers: one ``prepare_<corpus>(root, ...) -> Iterator[AudioItem]`` per corpus.

Each reads a corpus in its own published layout and yields manifest items
without decoding audio (``soundfile.info`` fills in the sample rate, length
and channels unless ``probe=False``). Pass ``stats=ImportStats()`` to learn
how many files were missing or unreadable. ``prepare(name, root, **kw)`` looks
an importer up by name; :data:`IMPORTERS` lists them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

from audiocl.data.importers._common import ImportStats, probe_audio
from audiocl.data.importers.audiocaps import prepare_audiocaps
from audiocl.data.importers.clotho import prepare_clotho
from audiocl.data.importers.esc50 import prepare_esc50
from audiocl.data.importers.folder import prepare_folder
from audiocl.data.importers.fsdd import prepare_fsdd
from audiocl.data.importers.hf_datasets import prepare_hf
from audiocl.data.importers.lhotse_manifests import prepare_lhotse
from audiocl.data.importers.urbansound8k import prepare_urbansound8k
from audiocl.data.importers.webdataset_shards import prepare_webdataset
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError

IMPORTERS: dict[str, Callable[..., Iterator[AudioItem]]] = {
    "esc50": prepare_esc50,
    "fsdd": prepare_fsdd,
    "urbansound8k": prepare_urbansound8k,
    "audiocaps": prepare_audiocaps,
    "clotho": prepare_clotho,
    "folder": prepare_folder,
    # corpora read in place: items point into tars, arrow files, lhotse recordings
    "webdataset": prepare_webdataset,
    "hf": prepare_hf,
    "lhotse": prepare_lhotse,
}

__all__ = [
    "IMPORTERS",
    "detect_source",
    "ImportStats",
    "get_importer",
    "importer_options",
    "prepare",
    "prepare_manifest",
    "prepare_audiocaps",
    "prepare_clotho",
    "prepare_esc50",
    "prepare_folder",
    "prepare_fsdd",
    "prepare_hf",
    "prepare_lhotse",
    "prepare_urbansound8k",
    "prepare_webdataset",
    "probe_audio",
]


def detect_source(path: str | os.PathLike) -> str | None:
    """The in-place importer that reads ``path`` (``webdataset``, ``hf``, ``lhotse``), or
    None when it is none of them (an audiocl manifest, a store, anything else)."""
    import glob
    import gzip
    import json

    p = str(path)
    if any(c in p for c in "*?[{"):
        return "webdataset" if ".tar" in p else None
    if os.path.isdir(p):
        if any(os.path.isfile(os.path.join(p, n)) for n in ("dataset_dict.json", "state.json")):
            return "hf"
        if glob.glob(os.path.join(p, "*.parquet")) or glob.glob(os.path.join(p, "*.arrow")):
            return "hf"
        if glob.glob(os.path.join(p, "**", "*.tar"), recursive=True):
            return "webdataset"
        return None
    if not os.path.isfile(p):
        return None
    if p.endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    if p.endswith((".parquet", ".arrow")):
        return "hf"
    try:
        with open(p, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(p, "rt", encoding="utf-8") if gz else open(p, encoding="utf-8")) as fh:
            first = json.loads(fh.readline() or "null")
    except (OSError, EOFError, UnicodeDecodeError, ValueError):
        return None
    # a lhotse cut or recording line: no audiocl "path", lhotse's own keys
    if isinstance(first, dict) and "path" not in first and ("sources" in first or "recording" in first):
        return "lhotse"
    return None


def get_importer(name: str) -> Callable[..., Iterator[AudioItem]]:
    """The importer called ``name``; ``AudioclError`` listing the known ones otherwise."""
    try:
        return IMPORTERS[name]
    except KeyError:
        raise AudioclError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(IMPORTERS))}"
        ) from None


def importer_options(name: str) -> list[str]:
    """Keyword options the importer ``name`` accepts (besides ``root``)."""
    sig = inspect.signature(get_importer(name))
    return [p for p in sig.parameters if p not in ("root", "stats")]


def prepare(name: str, root: str | os.PathLike | None, **kw: Any) -> Iterator[AudioItem]:
    """Run the importer ``name`` on ``root``; unknown options raise ``AudioclError``."""
    fn = get_importer(name)
    allowed = set(importer_options(name)) | {"stats"}
    bad = sorted(set(kw) - allowed)
    if bad:
        raise AudioclError(
            f"{name}: option(s) {', '.join(bad)} do not apply; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    return fn(root, **kw)


def prepare_manifest(
    name: str,
    root: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    relative_paths: bool = False,
    progress: Callable[[int], None] | None = None,
    **kw: Any,
) -> ImportStats:
    """Import ``root`` with the importer ``name`` and write the manifest ``out`` atomically.

    ``progress(n)`` is called after each item written. An import that yields
    no item at all raises ``AudioclError`` and writes nothing, as does any
    error on the way. The output's folder is created if needed. Returns the importer's :class:`ImportStats`.
    """
    from audiocl.data.manifest import ManifestWriter

    stats = ImportStats()
    items = prepare(name, root, stats=stats, **kw)
    # only after the importer accepted root and options, so a typo leaves no folder behind
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with ManifestWriter(out, relative_to_manifest=relative_paths) as writer:
        for item in items:
            writer.write(item)
            if progress is not None:
                progress(writer.count)
        if writer.count == 0:
            detail = f" ({stats.missing} missing audio files)" if stats.missing else ""
            where = root if root is not None else kw.get("recordings")
            raise AudioclError(f"{name}: no items found under {where}{detail}; nothing written")
    return stats
