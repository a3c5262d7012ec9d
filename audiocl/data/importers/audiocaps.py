"""AudioCaps (Kim et al. 2019): captions for 10 s AudioSet (YouTube) clips.

Published layout (github.com/cdjkim/audiocaps, folder ``dataset/``)::

    train.csv  val.csv  test.csv     audiocap_id,youtube_id,start_time,caption

``train.csv`` has one caption per clip, ``val.csv``/``test.csv`` five rows
per clip. The audio is not distributed: users download the clips from YouTube
themselves, so file names vary. By default each clip is looked for under
``audio_dir`` (default: ``root``) with the patterns in
:data:`DEFAULT_PATTERNS`; ``filename_pattern`` sets one pattern of your own
with the placeholders ``{split}``, ``{youtube_id}``, ``{start_time}`` and
``{audiocap_id}`` (tried with each of the clip's caption ids).

Rows are grouped per clip (``youtube_id`` + ``start_time`` within a split);
``texts`` holds the clip's captions in CSV order, ``split`` is the CSV's name
(``train``/``val``/``test``). The downloaded file is the 10 s segment itself,
so ``start`` is 0; the YouTube offset is kept in ``youtube_start_time``,
with ``youtube_id`` and ``audiocap_ids``. Clips whose audio cannot be found
are skipped, counted and reported (some YouTube videos always disappear);
``on_missing="error"`` makes them fatal.
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
    parse_int,
    read_csv,
    resolve_root,
)
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "audiocaps"
LICENSE = "AudioSet/YouTube; CC BY 4.0 annotations"
SPLITS = ("train", "val", "test")
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
DEFAULT_PATTERNS = tuple(
    p + ext
    for p in (
        "{split}/{youtube_id}",
        "{split}/Y{youtube_id}",
        "{youtube_id}",
        "Y{youtube_id}",
        "{split}/{audiocap_id}",
        "{audiocap_id}",
    )
    for ext in (".wav", ".flac")
)
_PLACEHOLDERS = ("split", "youtube_id", "start_time", "audiocap_id")


def _split_list(splits: str | Sequence[str] | None) -> list[str] | None:
    if splits is None:
        return None
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    return list(splits)


def _check_pattern(pattern: str) -> None:
    try:
        pattern.format(**{k: "x" for k in _PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as err:
        raise AudioclError(
            f"{NAME}: bad filename pattern {pattern!r} ({err}); "
            f"placeholders are {', '.join('{' + k + '}' for k in _PLACEHOLDERS)}"
        ) from None


def prepare_audiocaps(
    root: str | os.PathLike,
    *,
    audio_dir: str | os.PathLike | None = None,
    filename_pattern: str | None = None,
    splits: str | Sequence[str] | None = None,
    probe: bool = True,
    on_missing: str = "skip",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of AudioCaps; ids are ``audiocaps/<split>/<youtube_id>_<start_time>``.

    ``root`` holds the CSVs (or their ``dataset/`` folder does). ``splits``
    defaults to every split whose CSV is present.
    """
    base = resolve_root(root, NAME)
    check_on_missing(on_missing)
    csv_dir = base
    if not any((base / f"{s}.csv").is_file() for s in SPLITS) and (base / "dataset").is_dir():
        csv_dir = base / "dataset"
    wanted = _split_list(splits)
    if wanted is None:
        wanted = [s for s in SPLITS if (csv_dir / f"{s}.csv").is_file()]
        if not wanted:
            raise AudioclError(f"{NAME}: none of train.csv, val.csv, test.csv found in {csv_dir}")
    for s in wanted:
        if s not in SPLITS:
            raise AudioclError(f"{NAME}: unknown split {s!r}; splits are {', '.join(SPLITS)}")
        if not (csv_dir / f"{s}.csv").is_file():
            raise AudioclError(f"{NAME}: {s}.csv not found in {csv_dir}")
    adir = base if audio_dir is None else resolve_root(audio_dir, NAME)
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    if filename_pattern is not None:
        _check_pattern(filename_pattern)
        patterns = (filename_pattern,)
    tables = [(s, csv_dir / f"{s}.csv", read_csv(csv_dir / f"{s}.csv", COLUMNS)[1]) for s in wanted]
    st = stats if stats is not None else ImportStats()
    st.dataset = NAME
    return _items(tables, adir, patterns, probe, on_missing, st)


def _group(
    csv_path: Path, rows: list[tuple[int, dict[str, str]]]
) -> list[dict[str, Any]]:
    clips: dict[tuple[str, int], dict[str, Any]] = {}
    for line, row in rows:
        ytid = row["youtube_id"].strip()
        if not ytid:
            raise InputError(str(csv_path), "empty youtube_id", line=line, field="youtube_id")
        start = parse_int(row["start_time"], csv_path, line, "start_time")
        cap_id = parse_int(row["audiocap_id"], csv_path, line, "audiocap_id")
        caption = row["caption"].strip()
        if not caption:
            raise InputError(str(csv_path), "empty caption", line=line, field="caption")
        clip = clips.setdefault(
            (ytid, start),
            {"youtube_id": ytid, "start_time": start, "ids": [], "captions": [], "line": line},
        )
        clip["ids"].append(cap_id)
        clip["captions"].append(caption)
    return list(clips.values())


def _find_audio(adir: Path, patterns: tuple[str, ...], split: str, clip: dict[str, Any]) -> Path | None:
    for pattern in patterns:
        ids = clip["ids"] if "{audiocap_id}" in pattern else clip["ids"][:1]
        for cap_id in ids:
            rel = pattern.format(
                split=split,
                youtube_id=clip["youtube_id"],
                start_time=clip["start_time"],
                audiocap_id=cap_id,
            )
            cand = adir / rel
            if cand.is_file():
                return cand
    return None


def _items(
    tables: list[tuple[str, Path, list[tuple[int, dict[str, str]]]]],
    adir: Path,
    patterns: tuple[str, ...],
    probe: bool,
    on_missing: str,
    stats: ImportStats,
) -> Iterator[AudioItem]:
    for split, csv_path, rows in tables:
        for clip in _group(csv_path, rows):
            audio = _find_audio(adir, patterns, split, clip)
            if audio is None:
                first = patterns[0].format(
                    split=split, youtube_id=clip["youtube_id"],
                    start_time=clip["start_time"], audiocap_id=clip["ids"][0],
                )
                missing_audio(
                    stats, on_missing, adir / first, meta=csv_path, line=clip["line"],
                    field="youtube_id",
                )
                continue
            yield make_item(
                id=f"{NAME}/{split}/{clip['youtube_id']}_{clip['start_time']}",
                path=audio,
                probe=probe,
                stats=stats,
                texts=list(clip["captions"]),
                split=split,
                language="en",
                source=NAME,
                license=LICENSE,
                custom={
                    "youtube_id": clip["youtube_id"],
                    "youtube_start_time": clip["start_time"],
                    "audiocap_ids": list(clip["ids"]),
                },
            )
    finish(stats)
