"""Clotho v2.1 (Drossos et al. 2020): 15-30 s Freesound clips, five captions each.

Published layout (Zenodo 4783391, after unpacking the archives)::

    clotho_captions_development.csv   file_name,caption_1,...,caption_5
    clotho_captions_validation.csv
    clotho_captions_evaluation.csv
    clotho_metadata_{split}.csv       optional: file_name,keywords,sound_id,
                                      sound_link,start_end_samples,manufacturer,license
    development/*.wav  validation/*.wav  evaluation/*.wav

``texts`` holds the five captions (empty cells dropped), ``split`` is
``development``/``validation``/``evaluation``. Each clip keeps its own
Freesound licence: when the metadata CSV is present its ``license`` column
fills the item's ``license`` (and ``keywords``, ``sound_id``,
``manufacturer`` go to custom fields); otherwise ``license`` says to look the
clip up. A caption row whose audio file is absent raises an error naming the
line (``on_missing="skip"`` skips it and reports the count).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from audiocl.data.importers._common import (
    ImportStats,
    check_on_missing,
    finish,
    make_item,
    missing_audio,
    read_csv,
    resolve_root,
    unique_file_name,
)
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "clotho"
LICENSE = "Freesound licences per clip (see dataset)"
SPLITS = ("development", "validation", "evaluation")
CAPTION_COLUMNS = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))


def _split_list(splits: str | Sequence[str] | None) -> list[str] | None:
    if splits is None:
        return None
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    return list(splits)


def prepare_clotho(
    root: str | os.PathLike,
    *,
    audio_dir: str | os.PathLike | None = None,
    splits: str | Sequence[str] | None = None,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of Clotho; ids are ``clotho/<split>/<file stem>``.

    ``root`` holds the CSVs; audio is read from ``<audio_dir>/<split>/``
    (``audio_dir`` defaults to ``root``). ``splits`` defaults to every split
    whose captions CSV is present.
    """
    base = resolve_root(root, NAME)
    check_on_missing(on_missing)
    wanted = _split_list(splits)
    if wanted is None:
        wanted = [s for s in SPLITS if (base / f"clotho_captions_{s}.csv").is_file()]
        if not wanted:
            raise AudioclError(f"{NAME}: no clotho_captions_<split>.csv found in {base}")
    tables = []
    for s in wanted:
        if s not in SPLITS:
            raise AudioclError(f"{NAME}: unknown split {s!r}; splits are {', '.join(SPLITS)}")
        cap = base / f"clotho_captions_{s}.csv"
        if not cap.is_file():
            raise AudioclError(f"{NAME}: {cap.name} not found in {base}")
        meta_path = base / f"clotho_metadata_{s}.csv"
        meta = _read_metadata(meta_path) if meta_path.is_file() else {}
        tables.append((s, cap, read_csv(cap, CAPTION_COLUMNS)[1], meta))
    adir = base if audio_dir is None else resolve_root(audio_dir, NAME)
    st = stats if stats is not None else ImportStats()
    st.dataset = NAME
    return _items(tables, adir, probe, on_missing, st)


def _read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    header, rows = read_csv(path, ("file_name",))
    out: dict[str, dict[str, Any]] = {}
    for _line, row in rows:
        entry: dict[str, Any] = {}
        if row.get("keywords", "").strip():
            entry["keywords"] = [k.strip() for k in row["keywords"].split(";") if k.strip()]
        for key in ("sound_id", "manufacturer", "license"):
            if row.get(key, "").strip():
                entry[key] = row[key].strip()
        out[row["file_name"].strip()] = entry
    return out


def _items(
    tables: list[tuple[str, Path, list[tuple[int, dict[str, str]]], dict[str, dict[str, Any]]]],
    adir: Path,
    probe: bool,
    on_missing: str,
    stats: ImportStats,
) -> Iterator[AudioItem]:
    for split, cap_path, rows, meta in tables:
        seen: dict[str, int] = {}
        for line, row in rows:
            fname = unique_file_name(row, "file_name", cap_path, line, seen)
            texts = [row[f"caption_{i}"].strip() for i in range(1, 6)]
            texts = [t for t in texts if t]
            if not texts:
                raise InputError(str(cap_path), "no captions", line=line, field="caption_1")
            audio = adir / split / fname
            if not audio.is_file():
                missing_audio(stats, on_missing, audio, meta=cap_path, line=line, field="file_name")
                continue
            extra = dict(meta.get(fname, {}))
            license_ = extra.pop("license", LICENSE)
            yield make_item(
                id=f"{NAME}/{split}/{Path(fname).stem}",
                path=audio,
                probe=probe,
                stats=stats,
                texts=texts,
                split=split,
                language="en",
                source=NAME,
                license=license_,
                custom={"file_name": fname, **extra},
            )
    finish(stats)
