"""Pieces every importer shares: probing, CSV reading, the missing-file policy, stats."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

log = logging.getLogger("audiocl.data.importers")

AUDIO_EXTENSIONS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
ON_MISSING = ("error", "skip")
_EXAMPLES = 5


@dataclass
class ImportStats:
    """What an importer met on its way; filled while the items are pulled.

    ``missing``: rows of the dataset's metadata whose audio file is absent
    (skipped under ``on_missing="skip"``). ``unprobed``: files that exist but
    that ``soundfile.info`` cannot read; they are still listed (with unknown
    duration) so that feature extraction records the reason in its error log.
    """

    dataset: str = ""
    items: int = 0
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    unprobed: int = 0
    unprobed_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_missing(self, what: str) -> None:
        self.missing += 1
        if len(self.missing_examples) < _EXAMPLES:
            self.missing_examples.append(what)

    def add_unprobed(self, what: str) -> None:
        self.unprobed += 1
        if len(self.unprobed_examples) < _EXAMPLES:
            self.unprobed_examples.append(what)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "items": self.items,
            "missing": self.missing,
            "missing_examples": list(self.missing_examples),
            "unprobed": self.unprobed,
            "unprobed_examples": list(self.unprobed_examples),
            "notes": list(self.notes),
        }


def resolve_root(root: str | os.PathLike, dataset: str) -> Path:
    """Absolute path of an existing dataset folder, or one clear ``AudioclError``."""
    p = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not p.exists():
        raise AudioclError(f"{dataset}: dataset root not found: {p}")
    if not p.is_dir():
        raise AudioclError(f"{dataset}: dataset root is not a folder: {p}")
    return p


def check_name(name: str) -> None:
    """A dataset name is the first part of every item id: non-empty, without '/'."""
    if not name or "/" in name:
        raise AudioclError(f"dataset name must be non-empty and without '/', got {name!r}")


def check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise AudioclError(f"on_missing must be one of {', '.join(ON_MISSING)}, got {on_missing!r}")


def probe_audio(path: str | os.PathLike) -> dict[str, Any] | None:
    """Header facts of a sound file without decoding it, or None if unreadable.

    Returns ``sampling_rate``, ``num_samples``, ``duration`` (seconds) and
    ``channels`` as read by libsndfile.
    """
    try:
        info = sf.info(str(path))
    except Exception:  # libsndfile raises several types for corrupt/unknown files
        return None
    sr = int(info.samplerate)
    frames = int(info.frames)
    # libsndfile reports a huge sentinel frame count for streams of unknown length
    if sr <= 0 or frames < 0 or frames >= 2**62:
        return None
    return {
        "sampling_rate": sr,
        "num_samples": frames,
        "duration": frames / sr,
        "channels": int(info.channels),
    }


def make_item(
    *,
    id: str,
    path: Path,
    probe: bool,
    stats: ImportStats,
    **fields: Any,
) -> AudioItem:
    """An ``AudioItem`` for ``path``, with header facts filled in when ``probe``."""
    facts: dict[str, Any] = {}
    if probe:
        got = probe_audio(path)
        if got is None:
            stats.add_unprobed(str(path))
            log.warning("cannot read the header of %s; listed without duration", path)
        else:
            facts = got
    item = AudioItem(id=id, path=str(path), **facts, **fields)
    stats.items += 1
    return item


def read_csv(
    path: Path, required: tuple[str, ...] | list[str]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """All rows of a CSV with their 1-based line numbers; checks required columns.

    The dataset CSVs are small (at most tens of thousands of rows), so they
    are read whole; this also lets a file that is not UTF-8 (some Clotho
    metadata) fall back to Latin-1 before any row is used.
    """
    if not path.is_file():
        raise AudioclError(f"metadata file not found: {path}")
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            with open(path, encoding=encoding, newline="") as fh:
                reader = csv.reader(fh)
                try:
                    header = next(reader)
                except StopIteration:
                    raise InputError(str(path), "empty CSV file", line=1) from None
                header = [h.strip() for h in header]
                rows: list[tuple[int, dict[str, str]]] = []
                start = reader.line_num + 1
                for values in reader:
                    lineno = start
                    start = reader.line_num + 1
                    if not values or all(not v.strip() for v in values):
                        continue
                    if len(values) != len(header):
                        raise InputError(
                            str(path),
                            f"expected {len(header)} columns, got {len(values)}",
                            line=lineno,
                        )
                    rows.append((lineno, dict(zip(header, values))))
            break
        except UnicodeDecodeError:
            continue
        except csv.Error as err:
            raise InputError(str(path), f"malformed CSV: {err}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            str(path),
            f"missing column(s) {', '.join(missing)}; found {', '.join(header)}",
            line=1,
            field=missing[0],
        )
    return header, rows


def unique_file_name(
    row: dict[str, str], field: str, path: Path, line: int, seen: dict[str, int]
) -> str:
    """The stripped file name in ``row[field]``; an error names the line when it is
    empty or was listed before (``seen`` maps names to their first line)."""
    fname = row[field].strip()
    if not fname:
        raise InputError(str(path), "empty file name", line=line, field=field)
    if fname in seen:
        raise InputError(
            str(path), f"{fname} listed twice (first on line {seen[fname]})", line=line, field=field
        )
    seen[fname] = line
    return fname


def parse_int(value: str, path: Path, line: int, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(str(path), f"expected an integer, got {value!r}", line=line, field=name) from None


def parse_float(value: str, path: Path, line: int, name: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise InputError(str(path), f"expected a number, got {value!r}", line=line, field=name) from None


def parse_bool(value: str, path: Path, line: int, name: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise InputError(str(path), f"expected True or False, got {value!r}", line=line, field=name)


def missing_audio(
    stats: ImportStats,
    on_missing: str,
    audio: Path,
    *,
    meta: Path | None = None,
    line: int | None = None,
    field: str | None = None,
) -> None:
    """Apply the missing-file policy: raise (``error``) or count and warn (``skip``)."""
    if on_missing == "error":
        raise InputError(
            None if meta is None else str(meta),
            f"audio file not found: {audio} (use on_missing='skip' / --skip-missing to skip)",
            line=line,
            field=field,
        )
    stats.add_missing(str(audio))
    if stats.missing <= _EXAMPLES:
        log.warning("audio file not found, skipped: %s", audio)


def finish(stats: ImportStats) -> None:
    """Log the end-of-import summary."""
    if stats.missing:
        log.warning("%s: %d audio file(s) missing and skipped", stats.dataset, stats.missing)
    if stats.unprobed:
        log.warning("%s: %d file(s) with unreadable headers", stats.dataset, stats.unprobed)


def iter_audio_files(
    root: Path, extensions: tuple[str, ...] | list[str] = AUDIO_EXTENSIONS
) -> Iterator[Path]:
    """Sound files under ``root`` (recursively, sorted, hidden files skipped)."""
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        # symlinked folders are followed, so guard against cycles
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                yield Path(dirpath) / name
