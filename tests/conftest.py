"""Fixtures shared by the whole test suite.

- ``shared_dir``: the workplace's ``../shared`` folder (real data and reference
  outputs). Tests that need it are skipped only when that folder is absent.
- ``tiny_wav_factory``: writes short synthetic sound files (wav, flac, ogg, mp3)
  so tests can build corpora in any published layout without downloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"

# suffix -> (soundfile format, subtype)
_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The workplace's shared folder; skips the test when it does not exist."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} is absent")
    return SHARED_DIR


def make_tone(
    seconds: float = 0.5,
    sample_rate: int = 16000,
    channels: int = 1,
    freq: float = 440.0,
    seed: int = 0,
    amplitude: float = 0.3,
) -> np.ndarray:
    """A sine tone plus a little seeded noise, shape [samples, channels], float32."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed)
    cols = []
    for c in range(channels):
        tone = amplitude * np.sin(2 * np.pi * freq * (c + 1) * t)
        cols.append(tone + 0.01 * rng.standard_normal(n))
    return np.stack(cols, axis=1).astype(np.float32)


WavFactory = Callable[..., Path]


@pytest.fixture
def tiny_wav_factory(tmp_path: Path) -> WavFactory:
    """Return ``make(path, seconds=0.5, sample_rate=16000, channels=1, freq=440.0,
    seed=0, data=None) -> Path``.

    ``path`` may be relative (then under ``tmp_path``); its suffix picks the
    format (.wav PCM16, .flac, .ogg Vorbis, .mp3). Parent folders are created.
    Pass ``data`` (float array [samples] or [samples, channels]) to write exact
    samples instead of a tone.
    """

    def make(
        path: str | Path,
        *,
        seconds: float = 0.5,
        sample_rate: int = 16000,
        channels: int = 1,
        freq: float = 440.0,
        seed: int = 0,
        data: np.ndarray | None = None,
    ) -> Path:
        p = Path(path)
        if not p.is_absolute():
            p = tmp_path / p
        p.parent.mkdir(parents=True, exist_ok=True)
        suffix = p.suffix.lower()
        if suffix not in _FORMATS:
            raise ValueError(f"tiny_wav_factory: unsupported suffix {suffix!r}")
        fmt, subtype = _FORMATS[suffix]
        if data is None:
            data = make_tone(seconds, sample_rate, channels, freq, seed)
        sf.write(str(p), data, sample_rate, format=fmt, subtype=subtype)
        return p

    return make


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    The CI machine has 2 cores shared with Ray workers; more threads only add contention.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
