"""Decoding, channel mixing, resampling and sanity checks for audio files.

Every decode goes through libsndfile (``soundfile``): WAV, FLAC, OGG/Vorbis,
OGG/Opus and MP3 (libsndfile >= 1.1). A segment (``start``/``duration``) is read
by seeking, so a 10 s excerpt of a one-hour file decodes 10 s, not the hour;
MP3 is the exception (decoded from the start in one call, see ``load_audio``).

Resampling uses one pinned resampler, recorded in :data:`RESAMPLER`; the
front-end hash includes that dict, so features made with another resampler or
quality are never mixed into the same store.

Failures raise :class:`AudioDecodeError` with a machine-readable ``reason``
(one of :data:`REASONS`), which the extraction job writes to ``errors.jsonl``.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiocl.errors import AudioclError

#: The resampler every waveform goes through. Part of ``FrontendConfig.hash()``.
RESAMPLER: dict[str, str] = {"library": "soxr", "version": soxr.__version__, "quality": "HQ"}

#: More channels than this is treated as a broken or non-audio layout.
MAX_CHANNELS = 8

#: Reasons an :class:`AudioDecodeError` can carry, with what each means.
REASONS: dict[str, str] = {
    "missing": "the file does not exist (or is a symlink to nothing)",
    "not_a_file": "the path is a directory or another non-regular file (device, FIFO)",
    "symlink_loop": "the path is a symlink that leads back to itself",
    "truncated": "the file holds fewer samples than its header declares (a cut-off download or copy)",
    "unreadable": "libsndfile cannot open or decode the file (corrupt, truncated, unknown format)",
    "out_of_range": "the requested segment starts at or after the end of the file, or is negative",
    "empty": "no samples (empty file or zero-length segment)",
    "nonfinite": "NaN or infinite samples",
    "silent": "every sample is below the silence threshold",
    "too_short": "shorter than the minimum duration",
    "too_long": "longer than the maximum duration",
    "bad_channels": f"zero channels, more than {MAX_CHANNELS} channels, or an array that is not [channels, samples]",
    "bad_rate": "a sample rate that is not a positive integer",
}


class AudioDecodeError(AudioclError):
    """An audio file (or waveform) that cannot be used.

    ``reason`` is one of the keys of :data:`REASONS`; ``path`` names the file
    (or ``"<array>"`` for an in-memory waveform); ``detail`` is human text.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown AudioDecodeError reason {reason!r}")
        self.path = "<array>" if path is None else str(path)
        self.reason = reason
        self.detail = detail or REASONS[reason]
        super().__init__(f"{self.path}: {reason}: {self.detail}")


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a regular file (symlinks followed); else
    :class:`AudioDecodeError` with the reason: ``missing``, ``symlink_loop`` or
    ``not_a_file``."""
    import errno
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioDecodeError(p, "symlink_loop") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            detail = ""
            if os.path.islink(p):
                detail = f"a symlink to {os.readlink(p)}, which does not exist"
            raise AudioDecodeError(p, "missing", detail) from None
        raise AudioDecodeError(p, "unreadable", f"{e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise AudioDecodeError(p, "not_a_file", f"{kind}, not a sound file")
    return p


#: formats whose header frame count is exact, so fewer decoded frames means a cut file
#: (MP3 and OGG headers estimate their length; libsndfile reads short there legitimately)
_EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})


_DATA_SHOULD_BE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_BLOCK_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")


def _wav_truncation(f: sf.SoundFile) -> str | None:
    """For a RIFF/WAVE file whose data chunk is shorter than its header declares,
    the text of the problem; None otherwise. libsndfile then quietly shortens
    ``frames`` to what is there and notes the difference only in its log, which
    ``extra_info`` exposes (``data : 10296 (should be 3432)``)."""
    if f.format not in ("WAV", "WAVEX", "RF64"):
        return None
    m = _DATA_SHOULD_BE.search(f.extra_info)
    if not m:
        return None
    declared, present = int(m.group(1)), int(m.group(2))
    # 0 and 0xFFFFFFFF are what streaming writers put there when the length is unknown
    if declared <= present or declared in (0xFFFFFFFF, 0x7FFFFFFF):
        return None
    b = _BLOCK_ALIGN.search(f.extra_info)
    align = int(b.group(1)) if b and int(b.group(1)) > 0 else 1
    return (f"the header declares {declared // align} samples, only {present // align} "
            "are present")


def probe(path: str | os.PathLike | bytes, *, name: str | None = None) -> dict[str, int | float | str]:
    """Header facts of a file (or of encoded bytes, named ``name`` in errors) without
    decoding it: sampling rate, frames, channels, duration."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        p: str | Path = name or "<bytes>"
        src: str | io.BytesIO = io.BytesIO(bytes(path))
    else:
        p = check_file(path)
        src = str(p)
    try:
        info = sf.info(src)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioDecodeError(p, "unreadable", str(e)) from None
    return {
        "sampling_rate": int(info.samplerate),
        "num_samples": int(info.frames),
        "channels": int(info.channels),
        "duration": float(info.frames) / float(info.samplerate) if info.samplerate else 0.0,
        "format": str(info.format),
        "subtype": str(info.subtype),
    }


def load_audio(
    path: str | os.PathLike | bytes,
    *,
    start: float = 0.0,
    duration: float | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``[start, start + duration)`` seconds of ``path``.

    ``path`` is a file, or the encoded bytes of one (a tar member, an arrow
    row's embedded audio); for bytes, ``name`` is what errors call the source
    (e.g. ``shard.tar:key.flac``). Returns ``(x, sr)`` with ``x`` float32 of
    shape ``[channels, samples]`` at the file's own rate. ``duration=None``
    reads to the end; a segment running past the end is cut at the end (a
    user's duration rounded up must not fail). Only the segment is decoded
    (seek, then read).
    """
    src: str | io.BytesIO
    if isinstance(path, (bytes, bytearray, memoryview)):
        p: str | Path = name or "<bytes>"
        if len(path) == 0:
            raise AudioDecodeError(p, "empty", "zero bytes")
        src = io.BytesIO(bytes(path))
    else:
        p = check_file(path)
        src = str(p)
    if not math.isfinite(start) or start < 0:
        raise AudioDecodeError(p, "out_of_range", f"start={start} s is negative or not finite")
    if duration is not None and (not math.isfinite(duration) or duration < 0):
        raise AudioDecodeError(p, "out_of_range", f"duration={duration} s is negative or not finite")
    try:
        with sf.SoundFile(src) as f:
            sr = int(f.samplerate)
            total = int(f.frames)
            if f.channels < 1:
                raise AudioDecodeError(p, "bad_channels", f"{f.channels} channels")
            cut = _wav_truncation(f)
            if cut:
                raise AudioDecodeError(p, "truncated", cut)
            first = int(round(start * sr))
            if first > 0 and first >= total:
                raise AudioDecodeError(
                    p, "out_of_range", f"start={start} s is past the end ({total / sr:.3f} s)"
                )
            n = -1 if duration is None else int(round(duration * sr))
            if f.format == "MP3" and first:
                # libsndfile 1.2.2's MP3 decoder corrupts a few hundred samples at
                # the start of a second read call (seek included) on some files
                # (low-bitrate frames; a pure tone shows it); one read call from
                # the start is exact, so decode the prefix and drop it.
                x = f.read(frames=-1 if n < 0 else first + n, dtype="float32", always_2d=True)
                x = x[first:]
            else:
                if first:
                    f.seek(first)
                x = f.read(frames=n, dtype="float32", always_2d=True)
                want = total - first if n < 0 else min(n, total - first)
                if f.format in _EXACT_LENGTH_FORMATS and x.shape[0] < want:
                    # libsndfile returns what is there without an error
                    raise AudioDecodeError(
                        p, "truncated",
                        f"the header declares {total} samples, only {first + x.shape[0]} are present",
                    )
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        detail = str(e).strip() or type(e).__name__
        if not isinstance(src, str):  # not "Error opening <_io.BytesIO object at 0x...>: "
            detail = re.sub(r"^Error opening <[^>]*>:\s*", "", detail)
        raise AudioDecodeError(p, "unreadable", detail) from None
    if x.shape[0] == 0:
        raise AudioDecodeError(p, "empty", "no samples in the file or segment")
    # soundfile gives [samples, channels]; the project convention is channels first.
    return np.ascontiguousarray(x.T), sr


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average ``[channels, samples]`` to ``[samples]`` (a 1-D input is returned as float32)."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2 or x.shape[0] < 1:
        raise AudioDecodeError(None, "bad_channels", f"expected [channels, samples], got shape {x.shape}")
    if x.shape[0] == 1:
        return x[0].astype(np.float32, copy=False)
    # Accumulate in float64 so that mixing many channels does not add rounding.
    return x.mean(axis=0, dtype=np.float64).astype(np.float32)


def _check_rate(sr: object, what: str) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        if isinstance(sr, float) and sr.is_integer() and sr > 0:
            return int(sr)
        raise AudioDecodeError(None, "bad_rate", f"{what}={sr!r} is not a positive integer")
    return int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``[samples]`` or ``[channels, samples]`` from ``sr_in`` to ``sr_out`` Hz.

    soxr at the quality in :data:`RESAMPLER`; output float32 with exactly
    ``round(samples * sr_out / sr_in)`` samples (soxr's own length rule).
    Equal rates return the input unchanged (as float32).
    """
    sr_in = _check_rate(sr_in, "sr_in")
    sr_out = _check_rate(sr_out, "sr_out")
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out, quality=RESAMPLER["quality"]).astype(np.float32, copy=False)
    if x.ndim != 2:
        raise AudioDecodeError(None, "bad_channels", f"expected [channels, samples], got shape {x.shape}")
    # soxr wants [samples, channels]; it resamples all channels in one pass.
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality=RESAMPLER["quality"])
    return np.ascontiguousarray(y.T, dtype=np.float32)


def load_mono(
    path: str | os.PathLike | bytes,
    sample_rate: int,
    *,
    start: float = 0.0,
    duration: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode a segment (of a file or of encoded bytes, see :func:`load_audio`), mix
    it to mono and resample it to ``sample_rate``: float32 ``[samples]``."""
    x, sr = load_audio(path, start=start, duration=duration, name=name)
    return resample(to_mono(x), sr, sample_rate)


def check_waveform(
    x: np.ndarray,
    sr: int,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    silence_db: float | None = None,
    path: str | os.PathLike | None = None,
) -> None:
    """Raise :class:`AudioDecodeError` if ``x`` is not usable audio; return None if it is.

    ``x`` is ``[samples]`` or ``[channels, samples]``. Checks, in this order, each
    with its own reason: ``bad_channels`` (not 1-D/2-D, zero channels or more than
    :data:`MAX_CHANNELS`), ``bad_rate``, ``empty``, ``nonfinite`` (any NaN/inf),
    ``too_short`` / ``too_long`` (seconds, bounds inclusive), ``silent``.
    Silence: with ``silence_db=None`` only exact digital silence (every sample 0)
    fails; with a value, a peak ``20*log10(max|x|)`` below ``silence_db`` dBFS
    fails (e.g. ``-60``).
    """
    x = np.asarray(x)
    if x.ndim == 1:
        channels = 1
    elif x.ndim == 2:
        channels = x.shape[0]
    else:
        raise AudioDecodeError(path, "bad_channels", f"array of shape {x.shape} is not [channels, samples]")
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioDecodeError(path, "bad_channels", f"{channels} channels (allowed 1..{MAX_CHANNELS})")
    try:
        sr = _check_rate(sr, "sr")
    except AudioDecodeError as e:
        raise AudioDecodeError(path, "bad_rate", e.detail) from None
    n = x.shape[-1]
    if n == 0:
        raise AudioDecodeError(path, "empty", "no samples")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioDecodeError(path, "nonfinite", f"{bad} NaN or infinite samples")
    dur = n / sr
    if min_duration is not None and dur < min_duration:
        raise AudioDecodeError(path, "too_short", f"{dur:.3f} s < min_duration {min_duration} s")
    if max_duration is not None and dur > max_duration:
        raise AudioDecodeError(path, "too_long", f"{dur:.3f} s > max_duration {max_duration} s")
    peak = float(np.abs(x).max())
    if peak == 0.0:
        raise AudioDecodeError(path, "silent", "every sample is exactly zero")
    if silence_db is not None:
        peak_db = 20.0 * math.log10(peak)
        if peak_db < silence_db:
            raise AudioDecodeError(
                path, "silent", f"peak {peak_db:.1f} dBFS below silence threshold {silence_db} dBFS"
            )
