"""audiocl.audio.io: decoding (wav/flac/ogg/mp3), segments, mono, resampling, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocl.audio.io import (
    MAX_CHANNELS,
    REASONS,
    RESAMPLER,
    AudioDecodeError,
    check_waveform,
    load_audio,
    load_mono,
    probe,
    resample,
    to_mono,
)
from audiocl.errors import AudioclError

SR = 44100


def two_tones(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """[samples, 2]: 440 Hz left, 1000 Hz right, amplitude 0.4."""
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 1000 * t)], 1).astype(
        np.float32
    )


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_decode_formats_channels_first(tiny_wav_factory, suffix: str) -> None:
    data = two_tones()
    p = tiny_wav_factory("a" + suffix, data=data, sample_rate=SR)
    x, sr = load_audio(p)
    assert sr == SR and x.dtype == np.float32 and x.shape[0] == 2
    if suffix in (".wav", ".flac"):
        # PCM16: exact up to quantisation.
        assert x.shape[1] == len(data)
        np.testing.assert_allclose(x.T, data, atol=1.5 / 32768)
    else:
        # Lossy codecs: length within one codec frame, each channel keeps its tone.
        assert abs(x.shape[1] - len(data)) <= 2048
    assert abs(peak_hz(x[0], sr) - 440) < 3
    assert abs(peak_hz(x[1], sr) - 1000) < 3
    info = probe(p)
    assert info["sampling_rate"] == SR and info["channels"] == 2


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg", ".mp3"])
def test_segment_equals_slice_of_full_decode(tiny_wav_factory, suffix: str) -> None:
    p = tiny_wav_factory("s" + suffix, data=two_tones(2.0), sample_rate=SR)
    full, _ = load_audio(p)
    seg, sr = load_audio(p, start=0.5, duration=0.25)
    a = int(round(0.5 * sr))
    assert seg.shape == (2, int(round(0.25 * sr)))
    # Pure tones make low-bitrate MP3 frames, where libsndfile's seek/second read
    # is wrong; load_audio must still equal the full decode sample for sample.
    np.testing.assert_array_equal(seg, full[:, a : a + seg.shape[1]])


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".mp3"])
def test_bytes_decode_equals_file_decode(tiny_wav_factory, suffix: str) -> None:
    # tar members and arrow rows arrive as encoded bytes; they must decode exactly as the file
    p = tiny_wav_factory("b" + suffix, data=two_tones(2.0), sample_rate=SR)
    data = Path(p).read_bytes()
    for kw in ({}, {"start": 0.5, "duration": 0.25}):
        a, sr_a = load_audio(p, **kw)
        b, sr_b = load_audio(data, name="shard.tar:k" + suffix, **kw)
        assert sr_a == sr_b
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(b"not audio", name="shard.tar:bad.flac")
    assert e.value.reason == "unreadable" and str(e.value).startswith("shard.tar:bad.flac: ")
    assert "BytesIO" not in str(e.value)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(b"", name="shard.tar:empty.flac")
    assert e.value.reason == "empty"


def test_segment_past_end_is_cut_and_start_past_end_fails(tiny_wav_factory) -> None:
    p = tiny_wav_factory("e.flac", data=two_tones(1.0), sample_rate=SR)
    x, sr = load_audio(p, start=0.75, duration=10.0)
    assert x.shape[1] == SR - int(round(0.75 * SR))
    with pytest.raises(AudioDecodeError) as e:
        load_audio(p, start=1.5)
    assert e.value.reason == "out_of_range" and "e.flac" in str(e.value)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(p, start=-1.0)
    assert e.value.reason == "out_of_range"


def test_to_mono_averages_channels() -> None:
    x = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(to_mono(x), [0.5, 0.5, 0.5])
    assert to_mono(x[:1]).shape == (3,)
    assert to_mono(x[0]).dtype == np.float32


@pytest.mark.parametrize(("sr_in", "sr_out"), [(44100, 48000), (8000, 16000), (48000, 16000), (22050, 48000)])
def test_resample_length_and_frequency(sr_in: int, sr_out: int) -> None:
    n = int(1.5 * sr_in)
    t = np.arange(n) / sr_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert y.shape == (int(round(n * sr_out / sr_in)),)
    assert abs(peak_hz(y, sr_out) - 1000) < 2
    # Amplitude kept (soxr HQ passband is flat at 1 kHz); ignore edge transients.
    mid = y[len(y) // 4 : -len(y) // 4]
    assert abs(np.abs(mid).max() - 0.5) < 0.01
    stereo = resample(np.stack([x, -x]), sr_in, sr_out)
    assert stereo.shape == (2, len(y))
    np.testing.assert_allclose(stereo[0], y, atol=1e-6)


def test_resampler_identity_is_pinned() -> None:
    assert RESAMPLER["library"] == "soxr" and RESAMPLER["quality"] == "HQ" and RESAMPLER["version"]
    x = np.ones(100, dtype=np.float32)
    assert resample(x, 16000, 16000) is not None
    with pytest.raises(AudioDecodeError) as e:
        resample(x, 0, 16000)
    assert e.value.reason == "bad_rate"


def test_load_mono_resamples(tiny_wav_factory) -> None:
    p = tiny_wav_factory("m.wav", data=two_tones(1.0), sample_rate=SR)
    y = load_mono(p, 48000, start=0.25, duration=0.5)
    assert y.ndim == 1 and y.dtype == np.float32 and len(y) == 24000


# ---------------------------------------------------------------- bad input
def test_missing_and_unreadable(tmp_path: Path, tiny_wav_factory) -> None:
    with pytest.raises(AudioDecodeError) as e:
        load_audio(tmp_path / "nope.wav")
    assert e.value.reason == "missing" and "nope.wav" in str(e.value)
    assert isinstance(e.value, AudioclError)

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio at all")
    with pytest.raises(AudioDecodeError) as e:
        load_audio(junk)
    assert e.value.reason == "unreadable" and "junk.wav" in str(e.value)

    # A FLAC cut in the middle of its header.
    good = tiny_wav_factory("good.flac", data=two_tones(0.5), sample_rate=SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioDecodeError) as e:
        load_audio(cut)
    assert e.value.reason == "unreadable"

    text = tmp_path / "notes.mp3"
    text.write_text("hello\n" * 100)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(text)
    assert e.value.reason == "unreadable"


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(p)
    assert e.value.reason == "empty"
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(np.zeros(0, dtype=np.float32), 16000)
    assert e.value.reason == "empty"


def test_nonfinite_samples_from_a_float_wav(tmp_path: Path) -> None:
    x = np.full(1600, 0.1, dtype=np.float32)
    x[100] = np.nan
    x[200] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    y, sr = load_audio(p)
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(y, sr, path=p)
    assert e.value.reason == "nonfinite" and "2 NaN" in str(e.value) and "nan.wav" in str(e.value)


def test_silent_short_long() -> None:
    sr = 16000
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(np.zeros(sr, dtype=np.float32), sr)
    assert e.value.reason == "silent"
    quiet = np.full(sr, 1e-4, dtype=np.float32)  # -80 dBFS
    check_waveform(quiet, sr)  # not digital silence: fine without a threshold
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(quiet, sr, silence_db=-60)
    assert e.value.reason == "silent"
    check_waveform(quiet, sr, silence_db=-90)

    tone = np.full(sr, 0.5, dtype=np.float32)
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(tone, sr, min_duration=1.5)
    assert e.value.reason == "too_short"
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(tone, sr, max_duration=0.5)
    assert e.value.reason == "too_long"
    check_waveform(tone, sr, min_duration=1.0, max_duration=1.0)  # bounds inclusive


def test_bad_channel_layouts(tmp_path: Path) -> None:
    sr = 8000
    many = np.full((400, MAX_CHANNELS + 2), 0.1, dtype=np.float32)
    p = tmp_path / "many.wav"
    sf.write(p, many, sr)
    x, _ = load_audio(p)
    assert x.shape == (MAX_CHANNELS + 2, 400)
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(x, sr, path=p)
    assert e.value.reason == "bad_channels"
    check_waveform(x[:MAX_CHANNELS], sr)
    for bad in (np.zeros((0, 100)), np.ones((2, 3, 100))):
        with pytest.raises(AudioDecodeError) as e:
            check_waveform(bad, sr)
        assert e.value.reason == "bad_channels"
    with pytest.raises(AudioDecodeError) as e:
        check_waveform(np.ones(10), 0)
    assert e.value.reason == "bad_rate"


def test_every_reason_is_documented_and_unknown_reason_is_a_bug() -> None:
    assert set(REASONS) == {
        "missing",
        "not_a_file",
        "symlink_loop",
        "truncated",
        "unreadable",
        "out_of_range",
        "empty",
        "nonfinite",
        "silent",
        "too_short",
        "too_long",
        "bad_channels",
        "bad_rate",
    }
    with pytest.raises(ValueError):
        AudioDecodeError("x.wav", "no_such_reason")


# ---------------------------------------------------------------- real audio
def test_real_fsdd_and_esc50(shared_dir: Path) -> None:
    fsdd = sorted((shared_dir / "data/fsdd-dev/recordings").glob("*.wav"))[:5]
    assert fsdd
    for f in fsdd:
        x, sr = load_audio(f)
        assert sr == 8000 and x.shape[0] == 1
        check_waveform(x, sr, min_duration=0.1, max_duration=5.0, silence_db=-60, path=f)
        y = load_mono(f, 16000)
        assert len(y) == 2 * x.shape[1]
    esc = sorted((shared_dir / "data/esc50-sample/audio").glob("*.wav"))[:3]
    for f in esc:
        x, sr = load_audio(f)
        assert sr == 44100 and x.shape == (1, 220500)
        y = load_mono(f, 48000, start=1.0, duration=2.0)
        assert len(y) == 96000
        np.testing.assert_allclose(
            y, resample(x[0, 44100 : 44100 + 88200], 44100, 48000), atol=1e-6
        )
