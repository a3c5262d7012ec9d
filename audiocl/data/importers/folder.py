"""Any folder of sound files: labels from sub-folder names, or captions from a sidecar.

Two layouts::

    root/<label>/**.wav|flac|ogg|mp3       labels = [<label>] (first folder level)

    root/**.wav ... + captions.csv         columns file,caption; several rows per file
                    or captions.json       {"relative/path.wav": "caption" | ["c1", "c2"]}

Sidecar paths are relative to ``root`` with ``/`` separators. With
``labels_from="auto"`` (the default) labels come from folder names only when
there is no sidecar; ``"dirs"`` forces them, ``"none"`` turns them off. Files
with no caption in caption mode are still listed (counted in the summary).
A sidecar entry for a file that does not exist raises an error naming the
line or key (``on_missing="skip"`` skips it). Ids are
``<name>/<relative path without suffix>`` (with the suffix where two files
differ only by it). ``license`` is whatever the user states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from audiocl.data.importers._common import (
    AUDIO_EXTENSIONS,
    ImportStats,
    check_name,
    check_on_missing,
    finish,
    iter_audio_files,
    make_item,
    missing_audio,
    read_csv,
    resolve_root,
)
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "folder"
LABELS_FROM = ("auto", "dirs", "none")


def _ext_list(extensions: str | Sequence[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return AUDIO_EXTENSIONS
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    out = tuple(e.strip().lower().lstrip(".") for e in extensions if e.strip())
    if not out:
        raise AudioclError(f"{NAME}: no extensions given")
    return out


def _safe_rel(rel: str, sidecar: Path, line: int | None, key: str | None) -> str:
    p = PurePosixPath(rel.strip().replace("\\", "/"))
    if not rel.strip() or p.is_absolute() or ".." in p.parts:
        raise InputError(
            str(sidecar), f"path must be relative to the dataset folder, got {rel!r}",
            line=line, field=key,
        )
    return str(p)


def _read_captions(
    sidecar: Path,
) -> tuple[dict[str, list[str]], dict[str, tuple[int | None, str | None]]]:
    """``rel path -> captions`` and where each path was first named (line, field)."""
    caps: dict[str, list[str]] = {}
    where: dict[str, tuple[int | None, str | None]] = {}
    if sidecar.suffix.lower() == ".csv":
        _, rows = read_csv(sidecar, ("file", "caption"))
        for line, row in rows:
            rel = _safe_rel(row["file"], sidecar, line, "file")
            caption = row["caption"].strip()
            if not caption:
                raise InputError(str(sidecar), "empty caption", line=line, field="caption")
            caps.setdefault(rel, []).append(caption)
            where.setdefault(rel, (line, "file"))
        return caps, where
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(str(sidecar), f"invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(str(sidecar), "expected an object mapping relative path -> caption(s)")
    for key, value in data.items():
        rel = _safe_rel(key, sidecar, None, key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(str(sidecar), "expected a string or a list of strings", field=key)
        texts = [v.strip() for v in value if v.strip()]
        if not texts:
            raise InputError(str(sidecar), "no caption", field=key)
        caps.setdefault(rel, []).extend(texts)
        where.setdefault(rel, (None, key))
    return caps, where


def prepare_folder(
    root: str | os.PathLike,
    *,
    captions: str | os.PathLike | None = None,
    labels_from: str = "auto",
    extensions: str | Sequence[str] | None = None,
    name: str = NAME,
    license: str | None = None,
    split: str | None = None,
    language: str | None = None,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of a folder of sound files (see the module docstring).

    ``captions`` names the sidecar (default: ``root/captions.csv`` or
    ``root/captions.json`` if one exists). ``name`` prefixes the ids and is
    the items' ``source``; ``split`` and ``language`` are set on every item.
    """
    base = resolve_root(root, name)
    check_on_missing(on_missing)
    if labels_from not in LABELS_FROM:
        raise AudioclError(f"labels_from must be one of {', '.join(LABELS_FROM)}, got {labels_from!r}")
    check_name(name)
    exts = _ext_list(extensions)
    sidecar: Path | None
    if captions is not None:
        sidecar = Path(os.path.abspath(captions))
        if not sidecar.is_file():
            raise AudioclError(f"{name}: captions file not found: {sidecar}")
        if sidecar.suffix.lower() not in (".csv", ".json"):
            raise AudioclError(f"{name}: captions file must be .csv or .json: {sidecar}")
    else:
        found = [base / n for n in ("captions.csv", "captions.json") if (base / n).is_file()]
        if len(found) > 1:
            raise AudioclError(
                f"{name}: both captions.csv and captions.json in {base}; pass one with --captions"
            )
        sidecar = found[0] if found else None
    caps, where = _read_captions(sidecar) if sidecar is not None else ({}, {})
    use_dirs = labels_from == "dirs" or (labels_from == "auto" and sidecar is None)

    files = {f.relative_to(base).as_posix(): f for f in iter_audio_files(base, exts)}
    st = stats if stats is not None else ImportStats()
    st.dataset = name
    for rel in list(caps):
        if rel in files:
            continue
        p = base / rel
        if p.is_file():  # captioned file with an extension outside the list
            files[rel] = p
            continue
        line, key = where[rel]
        missing_audio(st, on_missing, p, meta=sidecar, line=line, field=key)
        del caps[rel]
    if not files:
        raise AudioclError(f"{name}: no sound files ({', '.join(exts)}) under {base}")
    return _items(
        base, dict(sorted(files.items())), caps, use_dirs, sidecar is not None,
        name, license, split, language, probe, st,
    )


def _ids(rels: list[str], name: str) -> dict[str, str]:
    stems = [str(PurePosixPath(r).with_suffix("")) for r in rels]
    count: dict[str, int] = {}
    for s in stems:
        count[s] = count.get(s, 0) + 1
    return {r: f"{name}/{s if count[s] == 1 else r}" for r, s in zip(rels, stems)}


def _items(
    base: Path,
    files: dict[str, Path],
    caps: dict[str, list[str]],
    use_dirs: bool,
    caption_mode: bool,
    name: str,
    license: str | None,
    split: str | None,
    language: str | None,
    probe: bool,
    stats: ImportStats,
) -> Iterator[AudioItem]:
    ids = _ids(list(files), name)
    unlabelled = 0
    uncaptioned = 0
    for rel, path in files.items():
        parts = PurePosixPath(rel).parts
        labels: list[str] = []
        if use_dirs:
            if len(parts) > 1:
                labels = [parts[0]]
            else:
                unlabelled += 1
        texts = list(caps.get(rel, []))
        if caption_mode and not texts:
            uncaptioned += 1
        yield make_item(
            id=ids[rel],
            path=path,
            probe=probe,
            stats=stats,
            texts=texts,
            labels=labels,
            split=split,
            language=language,
            source=name,
            license=license,
            custom={"relpath": rel},
        )
    if unlabelled:
        stats.notes.append(f"{unlabelled} file(s) directly in {base} have no label folder")
    if uncaptioned:
        stats.notes.append(f"{uncaptioned} file(s) have no caption in the sidecar")
    finish(stats)
