"""ESC-50 (Piczak 2015): 2000 five-second environmental recordings, 50 classes.

Published layout (github.com/karolpiczak/ESC-50)::

    ESC-50/
      audio/{fold}-{src_file}-{take}-{target}.wav     44.1 kHz mono, 5 s
      meta/esc50.csv   filename,fold,target,category,esc10,src_file,take

``labels`` is ``[category]`` in the dataset's own spelling (``dog``,
``keyboard_typing``); turning underscores into spaces for prompts is the
evaluator's business. ``fold`` (1-5, the cross-validation folds), ``target``,
``category``, ``esc10``, ``src_file`` and ``take`` are kept as custom fields;
``split`` stays None because ESC-50 is evaluated by 5-fold cross-validation.

A CSV row whose audio file is absent raises an error naming the CSV line
(``on_missing="skip"`` counts and skips those rows instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from audiocl.data.importers._common import (
    ImportStats,
    check_on_missing,
    finish,
    make_item,
    missing_audio,
    parse_bool,
    parse_int,
    read_csv,
    resolve_root,
    unique_file_name,
)
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "esc50"
LICENSE = "CC BY-NC 3.0"
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def prepare_esc50(
    root: str | os.PathLike,
    *,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of an ESC-50 folder (``root`` holds ``audio/`` and ``meta/``).

    Ids are ``esc50/<file stem>``, e.g. ``esc50/1-100032-A-0``.
    """
    base = resolve_root(root, NAME)
    check_on_missing(on_missing)
    csv_path = base / "meta" / "esc50.csv"
    if not csv_path.is_file():
        raise AudioclError(f"{NAME}: {base} is not an ESC-50 folder: meta/esc50.csv not found")
    _, rows = read_csv(csv_path, COLUMNS)
    st = stats if stats is not None else ImportStats()
    st.dataset = NAME
    return _items(base, csv_path, rows, probe, on_missing, st)


def _items(
    base: Path,
    csv_path: Path,
    rows: list[tuple[int, dict[str, str]]],
    probe: bool,
    on_missing: str,
    stats: ImportStats,
) -> Iterator[AudioItem]:
    seen: dict[str, int] = {}
    for line, row in rows:
        fname = unique_file_name(row, "filename", csv_path, line, seen)
        fold = parse_int(row["fold"], csv_path, line, "fold")
        target = parse_int(row["target"], csv_path, line, "target")
        esc10 = parse_bool(row["esc10"], csv_path, line, "esc10")
        category = row["category"].strip()
        if not category:
            raise InputError(str(csv_path), "empty category", line=line, field="category")
        audio = base / "audio" / fname
        if not audio.is_file():
            missing_audio(stats, on_missing, audio, meta=csv_path, line=line, field="filename")
            continue
        yield make_item(
            id=f"{NAME}/{Path(fname).stem}",
            path=audio,
            probe=probe,
            stats=stats,
            labels=[category],
            source=NAME,
            license=LICENSE,
            custom={
                "fold": fold,
                "target": target,
                "category": category,
                "esc10": esc10,
                "src_file": row["src_file"].strip(),
                "take": row["take"].strip(),
            },
        )
    finish(stats)
