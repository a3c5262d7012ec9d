"""audiocl.audio.frontend + length: parity with HF ClapFeatureExtractor and librosa,
config hashing/validation, length policies, fusion views, sliding windows."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocl.audio import frontend_config as fe_mod
from audiocl.audio.frontend import (
    PRESETS,
    FrontendConfig,
    LogMel,
    compute_logmel,
    get_preset,
    log_floor,
    num_frames,
)
from audiocl.audio.io import load_mono
from audiocl.audio.length import (
    apply_length_policy,
    apply_length_policy_frames,
    fusion_views,
)
from audiocl.errors import AudioclError

CLIP = 480000


@pytest.fixture(scope="module")
def hf_extractor():
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        truncation="rand_trunc", padding="repeatpad", frequency_min=50, frequency_max=14000
    )


def hf_logmel(fe, x: np.ndarray) -> np.ndarray:
    return fe(x, sampling_rate=48000, return_tensors="np")["input_features"][0, 0]


@pytest.fixture(scope="module")
def esc50_48k(shared_dir: Path) -> list[np.ndarray]:
    files = sorted((shared_dir / "data/esc50-sample/audio").glob("*.wav"))
    assert len(files) >= 4
    # Different categories (crow, footsteps, breathing, ...), resampled 44.1 -> 48 kHz.
    return [load_mono(f, 48000) for f in files[::3][:4]]


# ------------------------------------------------------------------ parity
def test_laion_preset_matches_hf_on_real_short_clips(hf_extractor, esc50_48k) -> None:
    cfg = get_preset("laion_clap")
    for x in esc50_48k:
        assert len(x) < CLIP  # 5 s clips: both sides repeat-pad to 10 s
        ref = hf_logmel(hf_extractor, x)
        ours = compute_logmel(apply_length_policy(x, cfg.clip_samples, cfg.length_policy), cfg)
        assert ours.shape == ref.shape == (1001, 64)
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-3


def test_laion_preset_matches_hf_on_long_clip_with_same_crop(hf_extractor, esc50_48k) -> None:
    cfg = get_preset("laion_clap")
    long = np.concatenate(esc50_48k[:3])  # 15 s
    assert len(long) > CLIP
    # HF draws the crop with np.random.randint(0, overflow + 1); draw the same offset.
    np.random.seed(1234)
    off = np.random.randint(0, len(long) - CLIP + 1)
    np.random.seed(1234)
    ref = hf_logmel(hf_extractor, long)
    ours = compute_logmel(long[off : off + CLIP], cfg)
    assert np.abs(ours - ref).max() < 1e-3


def test_pure_tone_high_dynamic_range_matches_hf(hf_extractor) -> None:
    """A lone tone leaves bands 110 dB below the frame peak: float32 FFT alone is
    off by ~0.1 dB there; the float64 refinement must bring it under 1e-3 dB."""
    t = np.arange(CLIP) / 48000
    x = (0.3 * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)
    x = (np.round(x * 32767) / 32767).astype(np.float32)
    cfg = get_preset("laion_clap")
    ref = hf_logmel(hf_extractor, x)
    assert np.abs(compute_logmel(x, cfg) - ref).max() < 1e-3
    with torch.inference_mode():
        rough = LogMel(cfg, precise=False)(torch.from_numpy(x)).numpy()
    assert np.abs(rough - ref).max() > 1e-3  # the refinement is doing the work


def test_fusion_preset_matches_hf_fusion(esc50_48k) -> None:
    """HF truncation="fusion": HTK mels on the whole clip, then a shrunk view + 3 crops."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers import ClapFeatureExtractor

    hf = ClapFeatureExtractor(truncation="fusion", padding="repeatpad", frequency_min=50, frequency_max=14000)
    cfg = get_preset("laion_clap_fusion")
    long = np.concatenate(esc50_48k[:3])
    np.random.seed(0)
    ref = hf(long, sampling_rate=48000, return_tensors="np")["input_features"][0]
    full = compute_logmel(long, cfg)
    views, longer = fusion_views(full, cfg.clip_frames, seed=0, key="x")
    assert longer and views.shape == ref.shape == (4, 1001, 64)
    assert np.abs(views[0] - ref[0]).max() < 1e-3  # the shrunk whole clip
    # HF's crops are random; each must be a slice of our full mel (to 1e-3 dB)
    for k in range(1, 4):
        diffs = [np.abs(full[s : s + 1001] - ref[k]).max() for s in range(len(full) - 1000)]
        assert min(diffs) < 1e-3


def test_batched_equals_single_and_frame_count(esc50_48k) -> None:
    cfg = get_preset("laion_clap")
    mod = LogMel(cfg)
    batch = np.stack([apply_length_policy(x, CLIP, "repeatpad") for x in esc50_48k])
    with torch.inference_mode():
        out = mod(torch.from_numpy(batch))
    assert out.shape == (len(batch), num_frames(CLIP, cfg), 64) == (len(batch), 1001, 64)
    assert out.dtype == torch.float32
    for i, x in enumerate(batch):
        np.testing.assert_allclose(out[i].numpy(), compute_logmel(x, cfg), atol=1e-5)
    # Variable lengths give T // hop + 1 frames.
    assert compute_logmel(esc50_48k[0][:12345], cfg).shape == (12345 // 480 + 1, 64)


def _librosa_logmel(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    import librosa

    S = librosa.feature.melspectrogram(
        y=y.astype(np.float64),
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=cfg.window,
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        power=cfg.power,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=cfg.f_max_hz,
        htk=cfg.mel_scale == "htk",
        norm=cfg.mel_norm,
    )
    if cfg.log == "log":
        out = np.log(np.maximum(S, cfg.amin))
    elif cfg.power == 2.0:
        out = librosa.power_to_db(S, ref=cfg.ref, amin=cfg.amin, top_db=cfg.top_db)
    else:
        out = librosa.amplitude_to_db(S, ref=cfg.ref, amin=cfg.amin, top_db=cfg.top_db)
    return out.T


def test_speech16k_matches_librosa(shared_dir: Path) -> None:
    cfg = get_preset("speech16k")
    assert (cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.n_mels) == (16000, 400, 160, 80)
    files = sorted((shared_dir / "data/fsdd-dev/recordings").glob("*.wav"))[:3]
    for f in files:
        y = load_mono(f, cfg.sample_rate)
        ref = _librosa_logmel(y, cfg)
        ours = compute_logmel(y, cfg)
        assert ours.shape == ref.shape == (len(y) // 160 + 1, 80)
        assert np.abs(ours - ref).max() < 2e-4  # natural log: 1e-3 dB = 2.3e-4


@pytest.mark.parametrize(
    "overrides",
    [
        {"mel_scale": "htk", "mel_norm": None, "log": "db", "amin": 1e-10},
        {"log": "db", "amin": 1e-10, "top_db": 60.0, "pad_mode": "constant", "n_mels": 40},
        {"log": "db", "amin": 1e-5, "power": 1.0, "window": "hamming", "f_min": 0.0, "f_max": None},
        {"log": "db", "amin": 1e-10, "n_fft": 400, "win_length": 400, "hop_length": 100, "ref": 0.01},
    ],
)
def test_overrides_match_librosa(shared_dir: Path, overrides: dict) -> None:
    cfg = get_preset("speech16k", **overrides)
    f = sorted((shared_dir / "data/fsdd-dev/recordings").glob("*.wav"))[7]
    y = load_mono(f, cfg.sample_rate)
    ref = _librosa_logmel(y, cfg)
    ours = compute_logmel(y, cfg)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def _librosa_filterbank(cfg) -> np.ndarray:
    import librosa

    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                             fmax=cfg.f_max_hz, htk=cfg.mel_scale == "htk",
                             norm=None if cfg.mel_norm == "unit_sum" else cfg.mel_norm, dtype=np.float64)
    if cfg.mel_norm == "unit_sum":
        fb = fb / fb.sum(axis=1, keepdims=True)
    return fb.T


def test_filterbank_equals_librosa_bit_for_bit() -> None:
    """Our numpy filterbank (no librosa import in extraction workers) must be
    librosa's exactly, or stores would change: every preset, then a sweep of
    rates, FFT sizes, band counts, edges, scales and norms (1157 configs, all
    equal, were checked once by hand; this keeps 100 of them)."""
    import itertools
    import random
    import warnings

    from audiocl.audio.frontend_config import PRESETS, mel_filterbank

    cfgs = list(PRESETS.values())
    grid = list(itertools.product([8000, 16000, 22050, 44100, 48000], [256, 512, 1024, 2048], [32, 64, 80, 128],
                                  [0.0, 20.0, 50.0], ["slaney", "htk"], ["slaney", None, "unit_sum"]))
    for sr, n_fft, n_mels, f_min, scale, norm in random.Random(0).sample(grid, 100):
        try:
            cfgs.append(get_preset("laion_clap", sample_rate=sr, n_fft=n_fft, win_length=n_fft, n_mels=n_mels,
                                   f_min=f_min, f_max=None, mel_scale=scale, mel_norm=norm))
        except AudioclError:
            continue  # e.g. hop longer than the window at this rate
    assert len(cfgs) > 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: empty filters at small n_fft
        for cfg in cfgs:
            try:
                ours = mel_filterbank(cfg)
            except AudioclError as err:  # unit_sum with an empty band: refused, as before
                assert cfg.mel_norm == "unit_sum" and "hold no FFT bin" in str(err)
                continue
            assert np.array_equal(ours, _librosa_filterbank(cfg)), cfg


def test_logmel_input_errors() -> None:
    mod = LogMel(get_preset("laion_clap"))
    with pytest.raises(AudioclError, match="too short for reflect"):
        mod(torch.zeros(1, 100))
    with pytest.raises(AudioclError, match=r"\[B, T\]"):
        mod(torch.zeros(1, 2, 3000))
    # constant padding accepts very short input
    short = LogMel(get_preset("laion_clap", pad_mode="constant"))(torch.zeros(2, 100))
    assert short.shape == (2, 1, 64)
    assert torch.all(short == log_floor(get_preset("laion_clap")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu() -> None:
    cfg = get_preset("laion_clap")
    x = torch.randn(3, CLIP) * 0.1
    cpu = LogMel(cfg)(x)
    gpu = LogMel(cfg).cuda()(x.cuda()).cpu()
    assert (cpu - gpu).abs().max() < 1e-3


# ------------------------------------------------------------------ config
def test_presets_and_roundtrip() -> None:
    assert set(PRESETS) == {"laion_clap", "laion_clap_fusion", "speech16k", "aisfx", "whisper"}
    lc = get_preset("laion_clap")
    assert (lc.sample_rate, lc.n_fft, lc.win_length, lc.hop_length, lc.n_mels) == (48000, 1024, 1024, 480, 64)
    assert (lc.f_min, lc.f_max, lc.mel_scale, lc.mel_norm, lc.top_db) == (50.0, 14000.0, "slaney", "slaney", None)
    assert lc.clip_samples == CLIP and lc.length_policy == "repeatpad+rand_trunc" and lc.clip_frames == 1001
    for name in PRESETS:
        cfg = get_preset(name)
        assert FrontendConfig.from_dict(cfg.to_dict()) == cfg
        assert FrontendConfig.from_dict(cfg.describe()) == cfg
        assert FrontendConfig.from_dict(cfg.to_dict()).hash() == cfg.hash()
    # JSON-style numbers are accepted and normalised
    assert FrontendConfig.from_dict({**lc.to_dict(), "f_min": 50, "sample_rate": 48000.0}).hash() == lc.hash()
    with pytest.raises(dataclasses.FrozenInstanceError):
        lc.n_mels = 10  # type: ignore[misc]


def test_unknown_keys_presets_and_bad_values() -> None:
    with pytest.raises(AudioclError, match="'n_melz'"):
        FrontendConfig.from_dict({**get_preset("laion_clap").to_dict(), "n_melz": 64})
    with pytest.raises(AudioclError, match="laion_clap, laion_clap_fusion, speech16k, whisper"):
        get_preset("laion")
    with pytest.raises(AudioclError, match="unknown key"):
        get_preset("laion_clap", hop=1)
    bad = [
        {"f_max": 30000.0},
        {"win_length": 2048},
        {"n_mels": 0},
        {"mel_scale": "kaldi"},
        {"log": "log2"},
        {"length_policy": "zeropad"},
        {"hop_length": 1.5},
        {"center": "yes"},
        {"top_db": -3.0},
        {"norm_std": 0.0},
        {"mel_norm": "unit_max"},
    ]
    for over in bad:
        with pytest.raises(AudioclError):
            get_preset("laion_clap", **over)
    d = get_preset("laion_clap").describe()
    d["hash"] = "0" * 64
    with pytest.raises(AudioclError, match="hash"):
        FrontendConfig.from_dict(d)
    # made with another resampler: parameters kept (a model still loads), warned
    d = {**get_preset("laion_clap").describe(), "resampler": {"library": "soxr", "version": "0.1", "quality": "HQ"}}
    with pytest.warns(UserWarning, match="resampler"):
        assert FrontendConfig.from_dict(d) == get_preset("laion_clap")


def test_hash_changes_with_every_parameter(monkeypatch) -> None:
    base = get_preset("laion_clap")
    changed = {
        "sample_rate": 44100,
        "n_fft": 2048,
        "win_length": 800,
        "hop_length": 320,
        "window": "hamming",
        "n_mels": 128,
        "f_min": 0.0,
        "f_max": 16000.0,
        "mel_scale": "htk",
        "mel_norm": None,
        "power": 1.0,
        "center": False,
        "pad_mode": "constant",
        "log": "log",
        "amin": 1e-5,
        "ref": 2.0,
        "top_db": 80.0,
        "clip_samples": 240000,
        "length_policy": "pad+trunc",
        "fusion": True,
        "norm_mean": -40.0,
        "norm_std": 40.0,
        "drop_last_frame": True,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(FrontendConfig)}
    hashes = {base.hash()}
    for k, v in changed.items():
        h = base.replace(**{k: v}).hash()
        assert h not in hashes, k
        hashes.add(h)
    # ... and with the resampler identity.
    monkeypatch.setattr(fe_mod, "RESAMPLER", {"library": "soxr", "version": "0.0", "quality": "VHQ"})
    assert base.hash() not in hashes


# ------------------------------------------------------------------ length policies
def test_policy_layouts_exact() -> None:
    x = np.array([1, 2, 3], dtype=np.float32)
    np.testing.assert_array_equal(apply_length_policy(x, 8, "repeatpad"), [1, 2, 3, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(apply_length_policy(x, 8, "repeat"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(apply_length_policy(x, 8, "pad"), [1, 2, 3, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(apply_length_policy(x, 5, "repeatpad"), [1, 2, 3, 0, 0])
    long = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(apply_length_policy(long, 4, "trunc"), [0, 1, 2, 3])
    np.testing.assert_array_equal(apply_length_policy(long, 4, "repeatpad"), [0, 1, 2, 3])
    np.testing.assert_array_equal(apply_length_policy(long, 10, "rand_trunc"), long)
    # short side of a truncation policy zero-pads; combined policy uses both halves
    np.testing.assert_array_equal(apply_length_policy(x, 5, "rand_trunc"), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(apply_length_policy(x, 7, "repeat+rand_trunc"), [1, 2, 3, 1, 2, 3, 1])
    # matches HF's waveform-level repeatpad on a real-length example
    y = np.random.default_rng(0).standard_normal(220500).astype(np.float32)
    hf_style = np.pad(np.tile(y, CLIP // len(y)), (0, CLIP - 2 * len(y)))
    np.testing.assert_array_equal(apply_length_policy(y, CLIP, "repeatpad"), hf_style)
    with pytest.raises(AudioclError, match="unknown length policy"):
        apply_length_policy(x, 8, "wrap")
    with pytest.raises(AudioclError):
        apply_length_policy(x[:0], 8, "pad")


def test_rand_trunc_seeded_deterministic() -> None:
    x = np.arange(1000, dtype=np.float32)
    a = apply_length_policy(x, 100, "rand_trunc", seed=3, key="clip-1")
    b = apply_length_policy(x, 100, "rand_trunc", seed=3, key="clip-1")
    np.testing.assert_array_equal(a, b)
    starts = {int(apply_length_policy(x, 100, "rand_trunc", seed=3, key=f"c{i}")[0]) for i in range(20)}
    assert len(starts) > 10 and all(0 <= s <= 900 for s in starts)
    seeds = {int(apply_length_policy(x, 100, "rand_trunc", seed=s)[0]) for s in range(20)}
    assert len(seeds) > 10
    # contiguous crop, all channels the same crop, torch in -> torch out
    np.testing.assert_array_equal(np.diff(a), np.ones(99))
    st = apply_length_policy(np.stack([x, -x]), 100, "rand_trunc", seed=3, key="clip-1")
    np.testing.assert_array_equal(st[0], a)
    np.testing.assert_array_equal(st[1], -a)
    t = apply_length_policy(torch.from_numpy(x), 100, "rand_trunc", seed=3, key="clip-1")
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(a))


def test_frame_policies_pad_with_floor() -> None:
    mel = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = apply_length_policy_frames(mel, 8, "repeatpad")
    assert out.shape == (8, 4)
    np.testing.assert_array_equal(out[:6], np.concatenate([mel, mel]))
    assert np.all(out[6:] == -100.0)
    sp = get_preset("speech16k")
    out = apply_length_policy_frames(mel, 5, "pad", pad_value=log_floor(sp))
    assert np.allclose(out[3:], np.log(1e-6))
    long = np.arange(40, dtype=np.float32).reshape(20, 2)
    a = apply_length_policy_frames(long, 5, "rand_trunc", seed=1, key="k")
    np.testing.assert_array_equal(a, apply_length_policy_frames(long, 5, "rand_trunc", seed=1, key="k"))
    s = int(a[0, 0]) // 2
    np.testing.assert_array_equal(a, long[s : s + 5])


def _bilinear_time(mel: np.ndarray, out_len: int) -> np.ndarray:
    """Independent 1-D linear resize along time, align_corners=False (PyTorch's rule)."""
    n = mel.shape[0]
    scale = n / out_len
    src = np.maximum((np.arange(out_len) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0)[:, None]
    return (1 - w) * mel[i0] + w * mel[i1]


def test_fusion_views() -> None:
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((3001, 64)).astype(np.float32)
    views, longer = fusion_views(mel, 1001, seed=5, key="a")
    assert longer and views.shape == (4, 1001, 64)
    again, _ = fusion_views(mel, 1001, seed=5, key="a")
    np.testing.assert_array_equal(views, again)
    # torch forms the source positions in float32: ~1e-3 on unit-variance data
    np.testing.assert_allclose(views[0], _bilinear_time(mel, 1001), atol=2e-3)
    n_starts = 3001 - 1001 + 1
    thirds = np.array_split(np.arange(n_starts), 3)
    for v, third in zip(views[1:], thirds):
        # each crop is an exact slice whose start lies in its third
        start = int(np.flatnonzero((mel[:, 0] == v[0, 0]) & (mel[:, 1] == v[0, 1]))[0])
        assert third[0] <= start <= third[-1]
        np.testing.assert_array_equal(v, mel[start : start + 1001])
    other, _ = fusion_views(mel, 1001, seed=6, key="a")
    assert not np.array_equal(other[1:], views[1:])
    # not longer than the chunk: the (repeat-padded) mel four times
    short = mel[:400]
    sv, longer = fusion_views(short, 1001)
    assert not longer and sv.shape == (4, 1001, 64)
    for k in range(4):
        np.testing.assert_array_equal(sv[k], apply_length_policy_frames(short, 1001, "repeatpad"))
    ev, longer = fusion_views(mel[:1001], 1001)
    assert not longer and np.array_equal(ev[3], mel[:1001])
