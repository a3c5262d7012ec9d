"""Export a manifest as lhotse manifests: a ``CutSet``, or ``RecordingSet`` + ``SupervisionSet``.

One ``Recording`` per distinct audio file (``AudioSource(type="file")``, its
rate, length and channels from the manifest or, when missing there, from the
file's header); one ``SupervisionSegment`` per item covering its segment
(``start``/``duration``; to the end of the file when ``duration`` is null),
with ``text`` = the first of the item's texts, ``speaker`` and ``language``;
one ``MonoCut`` (``MultiCut`` for a multi-channel file, all channels) per
item with that supervision. What lhotse has no field for travels in the
supervision's ``custom``: ``labels``, ``texts`` (when more than one),
``split``, ``source``, ``license`` and the item's custom fields.
:func:`audiocl.data.importers.prepare_lhotse` reads all of it back.

Recording ids are the item id for a file used by one item, else
``rec-<16 hex of sha256(path)>``; supervision and cut ids are the item ids.
Items inside a tar or arrow file (``ref``) have no lhotse file source and are
refused (``audiocl export webdataset`` writes such corpora).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError
from audiocl.extras import require

FEATURE = "audiocl export lhotse"
FORMATS = ("cuts", "recordings")
CUTS_FILE = "cuts.jsonl.gz"
RECORDINGS_FILE = "recordings.jsonl.gz"
SUPERVISIONS_FILE = "supervisions.jsonl.gz"


def _facts(item: Any) -> tuple[int, int, int]:
    """(sampling_rate, num_samples, channels) of the item's file."""
    if item.sampling_rate and item.num_samples is not None and item.channels:
        return int(item.sampling_rate), int(item.num_samples), int(item.channels)
    from audiocl.audio.io import AudioDecodeError, probe

    try:
        info = probe(item.path)
    except AudioDecodeError as err:
        raise AudioclError(f"export lhotse: item {item.id!r}: {err}") from None
    return int(info["sampling_rate"]), int(info["num_samples"]), int(info["channels"])


def _write(out: Path, write: Callable[[Path], None]) -> None:
    from audiocl.fsutil import tmp_path

    # lhotse picks gzip from the suffix, so the temporary name keeps it
    tmp = tmp_path(out).with_name(tmp_path(out).name + ".jsonl.gz")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_lhotse(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, format: str = "cuts") -> dict[str, Any]:
    """Write ``out_dir/cuts.jsonl.gz`` (``format="cuts"``) or ``recordings.jsonl.gz`` and
    ``supervisions.jsonl.gz`` (``format="recordings"``); returns a summary dict."""
    lhotse = require("lhotse", "lhotse", feature=FEATURE)
    from lhotse.cut import MultiCut
    from lhotse.utils import fastcopy

    from audiocl.data.manifest import read_manifest

    if format not in FORMATS:
        raise AudioclError(f"export lhotse: format must be one of {', '.join(FORMATS)}, got {format!r}")
    items = list(read_manifest(manifest))
    if not items:
        raise AudioclError(f"export lhotse: {manifest} has no items")
    uses: dict[str, int] = {}
    for it in items:
        if it.ref is not None:
            raise AudioclError(
                f"export lhotse: item {it.id!r} is inside {it.path} ({it.ref['kind']} {it.ref}); "
                "lhotse recordings point to files (use audiocl export webdataset)"
            )
        uses[it.path] = uses.get(it.path, 0) + 1
    recordings: dict[str, Any] = {}
    sups, cuts = [], []
    for it in items:
        sr, n, ch = _facts(it)
        rec = recordings.get(it.path)
        if rec is None:
            rid = it.id if uses[it.path] == 1 else "rec-" + hashlib.sha256(it.path.encode()).hexdigest()[:16]
            rec = lhotse.Recording(
                id=rid, sources=[lhotse.AudioSource(type="file", channels=list(range(ch)), source=it.path)],
                sampling_rate=sr, num_samples=n, duration=n / sr,
            )
            recordings[it.path] = rec
        duration = it.duration if it.duration is not None else max(rec.duration - it.start, 0.0)
        custom: dict[str, Any] = {"labels": list(it.labels)}
        if len(it.texts) > 1:
            custom["texts"] = list(it.texts)
        for k in ("split", "source", "license"):
            if getattr(it, k) is not None:
                custom[k] = getattr(it, k)
        custom.update(it.custom)
        channel: Any = 0 if ch == 1 else list(range(ch))
        sup = lhotse.SupervisionSegment(
            id=it.id, recording_id=rec.id, start=float(it.start), duration=float(duration),
            channel=channel, text=it.texts[0] if it.texts else None, language=it.language,
            speaker=it.speaker, custom=custom,
        )
        sups.append(sup)
        # the supervision is placed relative to the cut (which starts at the segment)
        inner = fastcopy(sup, start=0.0)
        if ch == 1:
            cuts.append(lhotse.MonoCut(id=it.id, start=float(it.start), duration=float(duration),
                                       channel=0, recording=rec, supervisions=[inner]))
        else:
            cuts.append(MultiCut(id=it.id, start=float(it.start), duration=float(duration),
                                 channel=list(range(ch)), recording=rec, supervisions=[inner]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if format == "cuts":
        _write(out / CUTS_FILE, lambda p: lhotse.CutSet.from_cuts(cuts).to_file(p))
        written.append(str(out / CUTS_FILE))
    else:
        _write(out / RECORDINGS_FILE, lambda p: lhotse.RecordingSet.from_recordings(recordings.values()).to_file(p))
        _write(out / SUPERVISIONS_FILE, lambda p: lhotse.SupervisionSet.from_segments(sups).to_file(p))
        written += [str(out / RECORDINGS_FILE), str(out / SUPERVISIONS_FILE)]
    return {"out": str(out), "files": written, "items": len(items), "recordings": len(recordings)}
