"""Hugging Face datasets read in place: ``save_to_disk`` folders, parquet and arrow files.

``root`` is a ``save_to_disk`` folder (a ``Dataset``, or a ``DatasetDict``
whose split names become the items' ``split``), one ``.parquet`` / ``.arrow``
file, or a folder of them. The audio column (``audio``, or the only column of
type ``Audio``) holds ``{bytes, path}`` structs:

- embedded bytes: the item's ``path`` is the arrow/parquet file and its
  ``ref`` the row (``{"kind": "arrow", "row": N, "column": "audio"}``); no
  audio is copied, and :mod:`audiocl.data.sources` reads the row back;
- a path only: the item is that file (relative paths against the data file's
  folder, then ``root``).

``text_column`` (default ``text``, else ``texts``, when present; strings or
lists of strings) gives ``texts``; ``label_column`` (default ``label``, else
``labels``; a
``ClassLabel`` becomes its names, ints or strings or lists of them) gives
``labels``; ``id_column`` (default ``id``), ``speaker_column`` (``speaker_id``
or ``speaker``) and ``language_column`` (``language`` or ``locale``) fill those
fields when present; other columns of plain values (strings, numbers, bools)
are kept as custom fields (columns named like a manifest core field are
dropped). Ids default to ``<name>/<split or file stem>/<row>`` (the row
within the split, counted across its files). ``splits``
selects splits of a ``DatasetDict``; ``split`` names the split of a plain
dataset. A row without audio follows ``on_missing`` (error: one line naming the
file and row; skip: counted). Needs the ``hf`` extra (``datasets``, ``pyarrow``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audiocl.data.importers._common import ImportStats, check_name, check_on_missing, finish, log
from audiocl.data.manifest import RESERVED_FIELDS, AudioItem
from audiocl.errors import AudioclError, InputError
from audiocl.extras import require

NAME = "hf"
FEATURE = "audiocl prepare hf"
_SPEAKER = ("speaker_id", "speaker")
_LANGUAGE = ("language", "locale")


def _data_files(root: Path, splits: str | None, split: str | None) -> list[tuple[str | None, Path]]:
    """``(split, data file)`` in dataset order."""
    if root.is_file():
        if root.suffix not in (".parquet", ".arrow"):
            raise AudioclError(f"{NAME}: expected a save_to_disk folder, a .parquet or an .arrow file: {root}")
        return [(split, root)]
    if not root.is_dir():
        raise AudioclError(f"{NAME}: dataset root not found: {root}")
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        datasets = require("datasets", "hf", feature=FEATURE)
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as err:  # datasets raises many types for a damaged folder
            raise InputError(str(root), f"not a readable save_to_disk folder ({type(err).__name__}: {err})") from None
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {split: loaded}
        if splits:
            want = [s.strip() for s in splits.split(",") if s.strip()]
            unknown = [s for s in want if s not in parts]
            if unknown:
                raise AudioclError(f"{NAME}: no split(s) {', '.join(unknown)} in {root}; "
                                   f"it has {', '.join(str(k) for k in parts)}")
            parts = {s: parts[s] for s in want}
        out = []
        for name, ds in parts.items():
            if getattr(ds, "_indices", None) is not None:
                # rows would not be the arrow files' rows; save_to_disk flattens them
                raise AudioclError(f"{NAME}: {root}: split {name} has an indices mapping; "
                                   "save it again with save_to_disk")
            out += [(name, Path(f["filename"])) for f in ds.cache_files]
        return out
    files = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file())
    if not files:
        raise AudioclError(f"{NAME}: no save_to_disk folder, .parquet or .arrow files under {root}")
    return [(split, p) for p in files]


def _pick(columns: list[str], given: str | None, defaults: tuple[str, ...], what: str, where: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise InputError(str(where), f"no {what} column {given!r}; columns: {', '.join(columns)}",
                             field=given)
        return given
    return next((c for c in defaults if c in columns), None)


def _strs(value: Any, names: list[str] | None) -> list[str]:
    if value is None:
        return []
    vals = value if isinstance(value, list) else [value]
    out = []
    for v in vals:
        if v is None:
            continue
        if names is not None and isinstance(v, int) and not isinstance(v, bool):
            if v < 0:  # ClassLabel's "no label"
                continue
            out.append(names[v])
        elif isinstance(v, str):
            if v.strip():
                out.append(v)
        else:
            out.append(str(v))
    return out


def prepare_hf(
    root: str | os.PathLike,
    *,
    audio_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    splits: str | None = None,
    split: str | None = None,
    name: str = NAME,
    license: str | None = None,
    language: str | None = None,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of a Hugging Face dataset on disk, pointing into its files (module docstring)."""
    check_on_missing(on_missing)
    check_name(name)
    base = Path(os.path.abspath(os.path.expanduser(str(root))))
    files = _data_files(base, splits, split)
    if not files:
        raise AudioclError(f"{NAME}: {base} holds no data files")
    st = stats if stats is not None else ImportStats()
    st.dataset = name
    cols = {"audio": audio_column, "text": text_column, "label": label_column, "id": id_column}
    return _items(base, files, cols, name, license, language, probe, on_missing, st)


def _items(
    base: Path, files: list[tuple[str | None, Path]], cols: dict[str, str | None], name: str,
    license: str | None, language: str | None, probe: bool, on_missing: str, st: ImportStats,
) -> Iterator[AudioItem]:
    datasets = require("datasets", "hf", feature=FEATURE)
    from audiocl.audio.io import AudioDecodeError
    from audiocl.audio.io import probe as probe_audio
    from audiocl.data.sources import arrow_audio_cell, open_table

    seen: dict[str, str] = {}
    offset: dict[str | None, int] = {}  # rows of the split's earlier files: ids count across files
    for split, path in files:
        try:
            table = open_table(str(path))
        except AudioDecodeError as err:
            raise InputError(str(path), err.detail) from None
        features = datasets.Features.from_arrow_schema(table.schema)
        columns = list(table.column_names)
        audio_types = [c for c, f in features.items() if isinstance(f, datasets.Audio)]
        acol = cols["audio"] or ("audio" if "audio" in columns else (audio_types[0] if len(audio_types) == 1 else None))
        if acol is None or acol not in columns:
            raise InputError(str(path), f"no audio column {cols['audio'] or 'audio'!r} (columns: "
                             f"{', '.join(columns)}); name it with --audio-column", field=cols["audio"])
        tcol = _pick(columns, cols["text"], ("text", "texts"), "text", path)
        lcol = _pick(columns, cols["label"], ("label", "labels"), "label", path)
        icol = _pick(columns, cols["id"], ("id",), "id", path)
        scol = _pick(columns, None, _SPEAKER, "speaker", path)
        gcol = _pick(columns, None, _LANGUAGE, "language", path)
        lfeat = features.get(lcol) if lcol else None
        if isinstance(lfeat, datasets.Sequence):
            lfeat = lfeat.feature
        if isinstance(lfeat, list) and lfeat:
            lfeat = lfeat[0]
        names = list(lfeat.names) if isinstance(lfeat, datasets.ClassLabel) else None
        used = {acol, tcol, lcol, icol, scol, gcol}
        scalar = [c for c in columns if c not in used and c not in RESERVED_FIELDS
                  and isinstance(features.get(c), datasets.Value)]
        group = split if split is not None else path.stem
        rows = {c: table.column(c).to_pylist() for c in {tcol, lcol, icol, scol, gcol, *scalar} if c}
        first = offset.get(group, 0)
        offset[group] = first + table.num_rows
        for row in range(table.num_rows):
            where = f"{path}:row {row}"
            cell = arrow_audio_cell(table, row, acol)
            if cell is None or (not cell["bytes"] and not cell["path"]):
                if on_missing == "error":
                    raise InputError(str(path), f"row {row} has no audio (null in column {acol!r}); "
                                     "use --on-missing skip to skip such rows", field=acol)
                st.add_missing(where)
                continue
            item_path, ref, blob = str(path), None, cell["bytes"]
            if blob:
                ref = {"kind": "arrow", "row": row, "column": acol}
            else:
                p = str(cell["path"])
                cand = [p] if os.path.isabs(p) else [str(path.parent / p), str(base / p)]
                found = next((c for c in cand if os.path.isfile(c)), None)
                if found is None:
                    if on_missing == "error":
                        raise InputError(str(path), f"row {row}: audio file not found: {cand[0]} "
                                         "(use --on-missing skip to skip it)", field=acol)
                    st.add_missing(cand[0])
                    continue
                item_path = os.path.abspath(found)
            ident = rows[icol][row] if icol else None
            ident = str(ident) if ident not in (None, "") else f"{name}/{group}/{first + row}"
            if ident in seen:
                raise InputError(str(path), f"row {row}: id {ident!r} already used by {seen[ident]}",
                                 field=icol or "id")
            seen[ident] = where
            facts: dict[str, Any] = {}
            if probe:
                try:
                    info = probe_audio(blob if blob else item_path, name=where)
                    facts = {k: info[k] for k in ("sampling_rate", "num_samples", "channels", "duration")}
                except AudioDecodeError:
                    st.add_unprobed(where)
                    log.warning("cannot read the header of %s; listed without duration", where)
            speaker = rows[scol][row] if scol else None
            lang = rows[gcol][row] if gcol else None
            custom = {c: rows[c][row] for c in scalar if _plain(rows[c][row])}
            st.items += 1
            yield AudioItem(
                id=ident, path=item_path, ref=ref,
                texts=_strs(rows[tcol][row], None) if tcol else [],
                labels=_strs(rows[lcol][row], names) if lcol else [],
                split=split, speaker=None if speaker is None else str(speaker),
                language=language if language is not None else (None if lang is None else str(lang)),
                source=name, license=license, custom=custom, **facts,
            )
    finish(st)


def _plain(v: Any) -> bool:
    # custom fields must survive JSON: NaN floats and bytes do not
    if isinstance(v, float):
        return v == v and abs(v) != float("inf")
    return isinstance(v, (str, int, bool)) and not isinstance(v, bytes)
