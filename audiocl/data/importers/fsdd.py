"""Free Spoken Digit Dataset (Jakobovski et al.): spoken digits, 8 kHz mono WAV.

Published layout (github.com/Jakobovski/free-spoken-digit-dataset)::

    free-spoken-digit-dataset/
      recordings/{digit}_{speaker}_{index}.wav
      metadata.json        optional here: speaker -> {gender, accent, language}

``labels`` and ``texts`` are the English word of the digit (``"zero"`` ..
``"nine"``); ``speaker`` is the speaker's name; ``digit`` (int) and ``index``
(int) are custom fields, with ``gender`` and ``accent`` from ``metadata.json``
when present. ``split`` follows the dataset's README: recordings with index
0-4 form the test set, 5-49 (and above) the training set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audiocl.data.importers._common import ImportStats, finish, make_item, resolve_root
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError, InputError

NAME = "fsdd"
LICENSE = "CC BY-SA 4.0"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME_RE = re.compile(r"^(\d)_(.+)_(\d+)$")
TEST_INDICES = range(0, 5)


def prepare_fsdd(
    root: str | os.PathLike,
    *,
    probe: bool = True,
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of an FSDD folder (``root`` holds ``recordings/``, or is that folder).

    Ids are ``fsdd/<file stem>``, e.g. ``fsdd/3_theo_12``. A ``.wav`` whose name
    does not follow ``{digit}_{speaker}_{index}.wav`` raises an error naming it.
    """
    base = resolve_root(root, NAME)
    rec = base / "recordings"
    if not rec.is_dir():
        if any(base.glob("*.wav")):
            rec, base = base, base.parent
        else:
            raise AudioclError(f"{NAME}: {base} has no recordings/ folder")
    speakers = _read_metadata(base / "metadata.json")
    entries = []
    for wav in rec.iterdir():
        if wav.suffix.lower() != ".wav" or wav.name.startswith("."):
            continue
        m = _NAME_RE.match(wav.stem)
        if m is None:
            raise InputError(str(wav), "file name does not match {digit}_{speaker}_{index}.wav")
        entries.append((int(m.group(1)), m.group(2), int(m.group(3)), wav))
    if not entries:
        raise AudioclError(f"{NAME}: no .wav files in {rec}")
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    st = stats if stats is not None else ImportStats()
    st.dataset = NAME
    return _items(entries, speakers, probe, st)


def _read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(str(path), f"invalid JSON: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError(str(path), "expected an object mapping speaker -> {gender, accent, ...}")
    return data


def _items(
    entries: list[tuple[int, str, int, Path]],
    speakers: dict[str, dict[str, Any]],
    probe: bool,
    stats: ImportStats,
) -> Iterator[AudioItem]:
    for digit, speaker, index, wav in entries:
        word = DIGIT_WORDS[digit]
        custom: dict[str, Any] = {"digit": digit, "index": index}
        meta = speakers.get(speaker, {})
        for key in ("gender", "accent"):
            if key in meta:
                custom[key] = meta[key]
        yield make_item(
            id=f"{NAME}/{wav.stem}",
            path=wav,
            probe=probe,
            stats=stats,
            texts=[word],
            labels=[word],
            split="test" if index in TEST_INDICES else "train",
            language="en",
            speaker=speaker,
            source=NAME,
            license=LICENSE,
            custom=custom,
        )
    finish(stats)
