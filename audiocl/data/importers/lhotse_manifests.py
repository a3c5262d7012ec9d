"""lhotse manifests read in place: a ``CutSet``, or ``RecordingSet`` + ``SupervisionSet``.

``root`` is a cuts manifest (``cuts.jsonl.gz``, as ``CutSet.to_file`` writes
it); or ``recordings`` (plus optional ``supervisions``) name the two manifests.
One item per cut, or, without cuts, one per supervision segment in the
supervisions' order (a recording with none gives one whole-recording item,
listed after the others). The item is the segment of the
recording's file (``path``, ``start``, ``duration``, ``sampling_rate``,
``num_samples``, ``channels`` from the recording): nothing is copied.

Fields: ``id`` is the cut's (or supervision's) id; ``texts`` the supervisions'
``text`` (plus a list under ``custom["texts"]``, as :mod:`audiocl.data.lhotse_export`
writes it); ``speaker`` and ``language`` the first supervision's; ``labels``,
``split``, ``source``, ``license`` and every other field come from the
supervision's and the cut's ``custom``. ``name`` (when given) replaces the
``source``.

Refused with one line naming the manifest and the cut/recording: a source
that is not a local file (``url``, ``command``, ``memory``, ``shar``), several
sources for one recording, recording ``transforms`` (speed perturbation: the
audio would differ), and a cut or supervision that selects some channels of a
multi-channel recording (audiocl mixes all channels). A recording whose file is
absent follows ``on_missing``. Needs the ``lhotse`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audiocl.data.importers._common import ImportStats, check_on_missing, finish
from audiocl.data.manifest import RESERVED_FIELDS, AudioItem
from audiocl.errors import AudioclError, InputError
from audiocl.extras import require

NAME = "lhotse"
FEATURE = "audiocl prepare lhotse"
#: audiocl fields that travel in a supervision's (or cut's) ``custom``
CUSTOM_CORE = ("labels", "texts", "split", "source", "license")


def _load(path: Path, what: str) -> Any:
    lhotse = require("lhotse", "lhotse", feature=FEATURE)
    if not path.is_file():
        raise AudioclError(f"{NAME}: {what} manifest not found: {path}")
    try:
        m = lhotse.load_manifest_lazy(path)
    except Exception as err:  # lhotse raises ValueError/KeyError/JSON errors for bad files
        raise InputError(str(path), f"not a lhotse manifest ({type(err).__name__}: {err})") from None
    if m is None:
        raise AudioclError(f"{NAME}: {path} is empty")
    return m


def prepare_lhotse(
    root: str | os.PathLike | None = None,
    *,
    recordings: str | os.PathLike | None = None,
    supervisions: str | os.PathLike | None = None,
    name: str | None = None,
    license: str | None = None,
    split: str | None = None,
    probe: bool = True,
    on_missing: str = "error",
    stats: ImportStats | None = None,
) -> Iterator[AudioItem]:
    """Items of lhotse manifests (see the module docstring). ``probe`` is accepted for
    the CLI's sake and unused: the recordings carry rate, length and channels."""
    del probe
    lhotse = require("lhotse", "lhotse", feature=FEATURE)
    check_on_missing(on_missing)
    if (root is None) == (recordings is None):
        raise AudioclError(f"{NAME}: give a cuts manifest (--root CUTS.jsonl.gz) or "
                           "--recordings R [--supervisions S], not both")
    if supervisions is not None and recordings is None:
        raise AudioclError(f"{NAME}: --supervisions needs --recordings")
    st = stats if stats is not None else ImportStats()
    st.dataset = name or NAME
    if root is not None:
        where = Path(os.path.abspath(os.path.expanduser(str(root))))
        m = _load(where, "cuts")
        if isinstance(m, lhotse.RecordingSet):
            return _from_recordings(where, m, None, None, name, license, split, on_missing, st)
        if not isinstance(m, lhotse.CutSet):
            raise InputError(str(where), f"expected a CutSet or RecordingSet, got a {type(m).__name__}")
        return _from_cuts(where, m, name, license, split, on_missing, st)
    rpath = Path(os.path.abspath(os.path.expanduser(str(recordings))))
    recs = _load(rpath, "recordings")
    if not isinstance(recs, lhotse.RecordingSet):
        raise InputError(str(rpath), f"expected a RecordingSet, got a {type(recs).__name__}")
    spath = sups = None
    if supervisions is not None:
        spath = Path(os.path.abspath(os.path.expanduser(str(supervisions))))
        sups = _load(spath, "supervisions")
        if not isinstance(sups, lhotse.SupervisionSet):
            raise InputError(str(spath), f"expected a SupervisionSet, got a {type(sups).__name__}")
    return _from_recordings(rpath, recs, spath, sups, name, license, split, on_missing, st)


def _audio_path(rec: Any, manifest: Path, what: str) -> str:
    if rec.transforms:
        raise InputError(str(manifest), f"{what}: recording {rec.id!r} has transforms "
                         f"({len(rec.transforms)}); audiocl reads the file as it is")
    if len(rec.sources) != 1:
        raise InputError(str(manifest), f"{what}: recording {rec.id!r} has {len(rec.sources)} "
                         "sources; audiocl reads one file per recording")
    src = rec.sources[0]
    if src.type != "file":
        raise InputError(str(manifest), f"{what}: recording {rec.id!r} has a {src.type!r} source; "
                         "audiocl reads local files")
    p = str(src.source)
    if os.path.isabs(p):
        return p
    # lhotse resolves relative paths against the working directory; also try the manifest's folder
    for cand in (os.path.abspath(p), str(manifest.parent / p)):
        if os.path.exists(cand):
            return cand
    return os.path.abspath(p)


def _check_channels(rec: Any, channel: Any, manifest: Path, what: str) -> None:
    chans = channel if isinstance(channel, list) else [channel]
    have = list(rec.channel_ids)
    if len(have) > 1 and sorted(chans) != sorted(have):
        raise InputError(str(manifest), f"{what} selects channel(s) {chans} of the "
                         f"{len(have)}-channel recording {rec.id!r}; audiocl mixes all channels")


def _split_custom(*customs: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(audiocl core fields, other fields) merged from supervision and cut ``custom``."""
    core: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for c in customs:
        for k, v in (c or {}).items():
            if k in CUSTOM_CORE:
                core.setdefault(k, v)
            elif k not in RESERVED_FIELDS:
                other.setdefault(k, v)
    return core, other


def _item(
    ident: str, rec: Any, start: float, duration: float, sups: list[Any], cut_custom: dict | None,
    manifest: Path, name: str | None, license: str | None, split: str | None, on_missing: str,
    st: ImportStats, what: str,
) -> AudioItem | None:
    path = _audio_path(rec, manifest, what)
    if not os.path.isfile(path):
        if on_missing == "error":
            raise InputError(str(manifest), f"{what}: audio file not found: {path} "
                             "(use --on-missing skip to skip it)")
        st.add_missing(f"{path} ({what})")
        return None
    core, other = _split_custom(*(s.custom for s in sups), cut_custom)
    texts = [s.text for s in sups if s.text]
    extra = core.get("texts")
    if isinstance(extra, list):
        texts += [t for t in extra if isinstance(t, str) and t not in texts]
    labels = core.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    first = sups[0] if sups else None
    st.items += 1
    return AudioItem(
        id=ident, path=path, start=float(start), duration=float(duration),
        sampling_rate=int(rec.sampling_rate), num_samples=int(rec.num_samples),
        channels=len(rec.channel_ids), texts=texts, labels=[str(x) for x in labels],
        split=split if split is not None else core.get("split"),
        language=None if first is None else first.language,
        speaker=None if first is None else first.speaker,
        source=name if name is not None else core.get("source"),
        license=license if license is not None else core.get("license"),
        custom=other,
    )


def _from_cuts(
    manifest: Path, cuts: Any, name: str | None, license: str | None, split: str | None,
    on_missing: str, st: ImportStats,
) -> Iterator[AudioItem]:
    for cut in cuts:
        what = f"cut {cut.id!r}"
        rec = getattr(cut, "recording", None)
        if rec is None:
            raise InputError(str(manifest), f"{what} has no recording (a padding or features-only cut)")
        _check_channels(rec, cut.channel, manifest, what)
        item = _item(cut.id, rec, cut.start, cut.duration, list(cut.supervisions), cut.custom,
                     manifest, name, license, split, on_missing, st, what)
        if item is not None:
            yield item
    finish(st)


def _from_recordings(
    manifest: Path, recs: Any, spath: Path | None, sups: Any, name: str | None,
    license: str | None, split: str | None, on_missing: str, st: ImportStats,
) -> Iterator[AudioItem]:
    recordings = {rec.id: rec for rec in recs}
    used: set[str] = set()
    # in the supervisions' order (the order the user gave, and what export writes)
    for s in sups if sups is not None else ():
        rec = recordings.get(s.recording_id)
        if rec is None:
            raise InputError(str(spath), f"supervision {s.id!r} names recording {s.recording_id!r}, "
                             f"which {manifest.name} lacks")
        used.add(rec.id)
        what = f"supervision {s.id!r}"
        _check_channels(rec, s.channel, spath or manifest, what)
        item = _item(s.id, rec, s.start, s.duration, [s], None, manifest, name, license,
                     split, on_missing, st, what)
        if item is not None:
            yield item
    # recordings without supervisions: one whole-recording item each, after the rest
    bare = [rec for rid, rec in recordings.items() if rid not in used]
    for rec in bare:
        item = _item(rec.id, rec, 0.0, rec.duration, [], None, manifest, name, license,
                     split, on_missing, st, f"recording {rec.id!r}")
        if item is not None:
            yield item
    if bare and sups is not None:
        st.notes.append(f"{len(bare)} recording(s) have no supervision; listed whole, after the others")
    finish(st)
