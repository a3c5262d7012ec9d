"""Two-event clips for a CompA-style compositional test (Ghosh et al., ICLR 2024).

From single-label clips A and B (labels ``a != b``) two kinds of clip are made,
each event being the loudest ``event_seconds`` window of its clip (RMS over
windows stepped by a tenth of the window), RMS-normalised to ``EVENT_DBFS``:

* ``sequence``: ``[A | B]``, the events one after the other
  (``2 * event_seconds`` long); caption ``"{a} followed by {b}"``;
* ``overlap``: ``A + B``, both at once (``event_seconds`` long); caption
  ``"{a} and {b} at the same time"``.

Each clip carries hard-negative captions made by swapping the composition:
a sequence's are the reversed order and the overlap of the same two events; an
overlap's are both orders. A model that only recognises the two events scores
all three captions alike, so the pick among them is at chance (1/3).
A mix whose peak would exceed 1 is scaled down to peak 0.99 (never clipped).

Everything is deterministic: pairs are drawn by ``numpy.random.default_rng(seed)``
from the items in manifest order, kinds alternate (even index sequence, odd
overlap), and files are written as 16-bit FLAC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.errors import AudioclError

__all__ = ["EVENT_DBFS", "captions_for", "compose", "loudest_window", "make_compositions"]

#: RMS level (dBFS) of each event before composing, so neither event drowns the other.
EVENT_DBFS = -20.0
KINDS = ("sequence", "overlap")


def captions_for(kind: str, a: str, b: str) -> tuple[str, list[str]]:
    """``(positive, hard negatives)`` for events ``a`` then/with ``b``."""
    seq_ab, seq_ba, both = f"{a} followed by {b}", f"{b} followed by {a}", f"{a} and {b} at the same time"
    if kind == "sequence":
        return seq_ab, [seq_ba, both]
    if kind == "overlap":
        return both, [seq_ab, seq_ba]
    raise AudioclError(f"unknown composition kind {kind!r}; known: {', '.join(KINDS)}")


def loudest_window(x: np.ndarray, n: int) -> np.ndarray:
    """The ``n``-sample window of mono ``x`` [samples] with the highest RMS (zero-padded if shorter)."""
    if x.shape[0] <= n:
        return np.pad(x, (0, n - x.shape[0]))
    hop = max(1, n // 10)
    starts = np.arange(0, x.shape[0] - n + 1, hop)
    c = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    energy = c[starts + n] - c[starts]
    s = int(starts[int(np.argmax(energy))])
    return x[s : s + n]


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms == 0.0:
        raise AudioclError("compose: an event window is digital silence")
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def compose(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The two-event waveform of ``kind`` from equal-length event windows ``a, b`` [samples]."""
    if a.shape != b.shape:
        raise AudioclError(f"compose: event windows differ in length ({a.shape[0]} vs {b.shape[0]})")
    a, b = _at_level(a, EVENT_DBFS), _at_level(b, EVENT_DBFS)
    if kind == "sequence":
        y = np.concatenate([a, b])
    elif kind == "overlap":
        y = a + b
    else:
        raise AudioclError(f"unknown composition kind {kind!r}; known: {', '.join(KINDS)}")
    peak = float(np.abs(y).max())
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32)


def _pairs(labels: Sequence[str], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    if len(set(labels)) < 2:
        raise AudioclError("compose: need clips of at least two labels")
    out = []
    while len(out) < n:
        i, j = (int(v) for v in rng.integers(len(labels), size=2))
        if labels[i] != labels[j]:
            out.append((i, j))
    return out


def _both(a: str | None, b: str | None) -> str | None:
    """Both events' field, each distinct value once (None when neither has one)."""
    return "; ".join(dict.fromkeys(v for v in (a, b) if v)) or None


def make_compositions(
    items: Sequence[Any],
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    sample_rate: int = 44100,
    event_seconds: float = 1.0,
    prefix: str = "compose",
) -> list[Any]:
    """Write ``n`` two-event FLAC clips made from manifest ``items`` into ``out_dir``.

    ``items``: :class:`audiocl.data.manifest.AudioItem` of one split, each with
    exactly one label (others are skipped). Returns the new clips' manifest
    items (for :func:`audiocl.data.manifest.write_manifest`): ``texts`` is the
    positive caption, ``labels`` the two events' labels, ``source`` and
    ``license`` those of both events (``"; "``-joined, each once: a mix is a
    derived work of both recordings), and ``custom`` holds ``hard_negatives``
    (the swapped captions), ``composition`` (the kind) and ``events`` (the
    source clip ids).
    """
    import soundfile as sf

    from audiocl.audio.io import load_mono
    from audiocl.data.manifest import AudioItem

    single = [it for it in items if len(it.labels) == 1]
    if not single:
        raise AudioclError("compose: no single-label items")
    rng = np.random.default_rng(seed)
    pairs = _pairs([it.labels[0] for it in single], n, rng)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    win = int(round(event_seconds * sample_rate))
    cache: dict[int, np.ndarray] = {}

    def event(k: int) -> np.ndarray:
        if k not in cache:
            it = single[k]
            x = load_mono(it.path, sample_rate, start=it.start, duration=it.duration, name=it.id)
            cache[k] = loudest_window(x, win)
        return cache[k]

    rows = []
    for idx, (i, j) in enumerate(pairs):
        kind = KINDS[idx % 2]
        a, b = single[i].labels[0], single[j].labels[0]
        y = compose(kind, event(i), event(j))
        path = out / f"{prefix}_{idx:05d}.flac"
        sf.write(str(path), y, sample_rate, format="FLAC", subtype="PCM_16")
        pos, negs = captions_for(kind, a, b)
        rows.append(AudioItem(
            id=f"{prefix}/{idx:05d}", path=str(path.resolve()), sampling_rate=sample_rate,
            num_samples=int(y.shape[0]), channels=1, texts=[pos], labels=[a, b], split=single[i].split,
            source=_both(single[i].source, single[j].source), license=_both(single[i].license, single[j].license),
            custom={"hard_negatives": negs, "composition": kind, "events": [single[i].id, single[j].id]},
        ))  # fmt: skip
    return rows
