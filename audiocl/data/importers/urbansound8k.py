"""UrbanSound8K (Salamon et al. 2014): 8732 urban sound slices (<= 4 s), 10 classes.

Published layout (urbansounddataset.weebly.com)::

    UrbanSound8K/
      audio/fold1/ .. audio/fold10/   {fsID}-{classID}-{occurrenceID}-{sliceID}.wav
      metadata/UrbanSound8K.csv
          slice_file_name,fsID,start,end,salience,fold,classID,class

``root`` may be the ``UrbanSound8K`` folder or the folder that contains it.
``labels`` is ``[class]`` (``dog_bark``, ``street_music``, ...). The CSV's
``start``/``end`` are the slice's times within the original Freesound
recording, not offsets into the slice file, so they are kept as the custom
fields ``slice_start``/``slice_end`` and the item's own ``start`` stays 0.
``fold``, ``fsID``, ``salience``, ``classID`` and ``class`` are kept too;
``split`` is None (10-fold cross-validation on the predefined folds).
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
    parse_float,
    parse_int,
    read_csv,
    resolve_root,
    unique_file_name,
)
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "urbansound8k"
LICENSE = "CC BY-NC 3.0"
COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
_CSV = Path("metadata") / "UrbanSound8K.csv"


def find_base(root: Path) -> Path:
    """The ``UrbanSound8K`` folder: ``root`` itself or its ``UrbanSound8K`` child."""
    for cand in (root, root / "UrbanSound8K"):
        if (cand / _CSV).is_file():
            return cand
    raise AudioclError(
        f"{NAME}: metadata/UrbanSound8K.csv not found in {root} or {root / 'UrbanSound8K'}"
    )


def prepare_urbansound8k(
    root: str | os.PathLike,
    *,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of UrbanSound8K; ids are ``urbansound8k/<file stem>``."""
    base = find_base(resolve_root(root, NAME))
    check_on_missing(on_missing)
    csv_path = base / _CSV
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
        fname = unique_file_name(row, "slice_file_name", csv_path, line, seen)
        fold = parse_int(row["fold"], csv_path, line, "fold")
        if not 1 <= fold <= 10:
            raise InputError(str(csv_path), f"fold must be 1..10, got {fold}", line=line, field="fold")
        label = row["class"].strip()
        if not label:
            raise InputError(str(csv_path), "empty class", line=line, field="class")
        custom = {
            "fold": fold,
            "fsID": parse_int(row["fsID"], csv_path, line, "fsID"),
            "slice_start": parse_float(row["start"], csv_path, line, "start"),
            "slice_end": parse_float(row["end"], csv_path, line, "end"),
            "salience": parse_int(row["salience"], csv_path, line, "salience"),
            "classID": parse_int(row["classID"], csv_path, line, "classID"),
            "class": label,
        }
        audio = base / "audio" / f"fold{fold}" / fname
        if not audio.is_file():
            missing_audio(stats, on_missing, audio, meta=csv_path, line=line, field="slice_file_name")
            continue
        yield make_item(
            id=f"{NAME}/{Path(fname).stem}",
            path=audio,
            probe=probe,
            stats=stats,
            labels=[label],
            source=NAME,
            license=LICENSE,
            custom=custom,
        )
    finish(stats)
