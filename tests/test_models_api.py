"""embed_audio_files / embed_waveforms / embed_texts: the deterministic length policy."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.audio.frontend import LogMel, get_preset  # noqa: E402
from audiocl.errors import AudioclError  # noqa: E402
from audiocl.models import (  # noqa: E402
    MultiTowerModel,
    embed_audio_files,
    embed_texts,
    embed_waveforms,
    load_model,
)
from audiocl.models.api import window_starts  # noqa: E402

torch.set_num_threads(1)
SR = 16000


@pytest.fixture(scope="module")
def model() -> MultiTowerModel:
    torch.manual_seed(0)
    cfg = {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1, "heads": 2}},
        },
    }
    fe = get_preset("laion_clap", sample_rate=SR, f_max=8000.0, hop_length=160, clip_samples=SR, length_policy="repeatpad+trunc")
    m = MultiTowerModel.from_config(cfg, frontend=fe)
    # non-trivial BatchNorm statistics
    m.train()
    with torch.no_grad():
        m({"audio": torch.randn(8, 100, 64) * 10 - 40})
    return m.eval()


def _direct(model: MultiTowerModel, x: np.ndarray, windows: list[tuple[int, int]], length: int | None = None) -> torch.Tensor:
    """Independent path: LogMel of the whole clip, frame windows ``(start, stop)``,
    tower (with ``length`` valid frames), mean, normalise."""
    lm = LogMel(model.frontend)
    with torch.no_grad():
        mel = lm(torch.from_numpy(x.astype(np.float32)))
        mels = torch.stack([mel[a:b] for a, b in windows])
        lens = None if length is None else torch.full((len(windows),), length)
        e = model.towers.audio(mels, lens)
    return torch.nn.functional.normalize(e.mean(0), dim=0)


def test_window_starts_cover_evenly():
    assert window_starts(100, 100) == [0]
    assert window_starts(50, 100) == [0]
    assert window_starts(250, 100) == [0, 75, 150]
    assert window_starts(201, 100) == [0, 50, 101]


def test_long_clip_is_mean_of_even_windows(model):
    # windows are cut from the whole clip's log-mel (the clip rule fits in the mel
    # domain, as a feature store holds it): 2.5 s = 251 frames -> starts 0, 75, 150
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(int(2.5 * SR))).astype(np.float32)
    got = embed_waveforms(model, [x], SR)[0]
    win = model.frontend.clip_frames
    assert win == 101
    expected = _direct(model, x, [(s, s + win) for s in (0, 75, 150)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_short_clip_is_repeat_padded(model):
    # 0.3 s = 31 frames: 3 whole copies of the mel (93 valid frames), then the log floor
    from audiocl.audio.frontend import log_floor

    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(int(0.3 * SR))).astype(np.float32)
    got = embed_waveforms(model, [x], SR)[0]
    with torch.no_grad():
        mel = LogMel(model.frontend)(torch.from_numpy(x))
        assert mel.shape[0] == 31
        padded = torch.full((101, mel.shape[1]), log_floor(model.frontend))
        padded[:93] = mel.repeat(3, 1)
        e = model.towers.audio(padded[None], torch.tensor([93]))[0]
    torch.testing.assert_close(got, torch.nn.functional.normalize(e, dim=0), atol=1e-5, rtol=0)
    # the zero tail is not signal: counting it changes the embedding of a CNN that masks
    with torch.no_grad():
        wrong = torch.nn.functional.normalize(model.towers.audio(padded[None], torch.tensor([101]))[0], dim=0)
    assert (got - wrong).abs().max() > 1e-4


def test_files_deterministic_batch_independent_and_resampled(model, tiny_wav_factory, shared_dir):
    esc = sorted((shared_dir / "data" / "esc50-sample" / "audio").glob("*.wav"))[:3]
    tone = tiny_wav_factory("tone.wav", seconds=0.7, sample_rate=8000)
    paths = [*esc, tone]
    a = embed_audio_files(model, paths, batch_size=2)
    b = embed_audio_files(model, paths, batch_size=16)
    assert a.shape == (4, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    single = embed_audio_files(model, [paths[1]])
    torch.testing.assert_close(single[0], a[1], atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[1])


def test_saved_model_gives_same_file_embeddings(model, tiny_wav_factory, tmp_path):
    p = tiny_wav_factory("x.flac", seconds=1.7, sample_rate=22050)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.frontend.hash() == model.frontend.hash()
    torch.testing.assert_close(embed_audio_files(loaded, [p]), embed_audio_files(model, [p]), atol=0, rtol=0)


def test_texts_and_missing_frontend(model):
    t = embed_texts(model, ["a dog", "ein Hund", "犬"])
    assert t.shape == (3, 16)
    bare = MultiTowerModel.from_config(model.config)
    with pytest.raises(AudioclError, match="front-end"):
        embed_waveforms(bare, [np.zeros(100, np.float32)], SR)
    with pytest.raises(AudioclError, match="NaN"):
        embed_waveforms(model, [np.full(100, np.nan, np.float32)], SR)


def test_waveform_speech_tower(tmp_path, tiny_wav_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    w2v = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    Wav2Vec2Model(w2v).save_pretrained(str(tmp_path / "w2v"))
    cfg = {"embed_dim": 8, "towers": {"speech": {"modality": "speech", "encoder": {"type": "hf_speech", "path": str(tmp_path / "w2v")}}}}
    m = MultiTowerModel.from_config(cfg, frontend=get_preset("speech16k", clip_samples=SR))
    p = tiny_wav_factory("s.wav", seconds=1.3, sample_rate=8000)
    e = embed_audio_files(m, [p])
    assert e.shape == (1, 8)
    m.save_pretrained(tmp_path / "sm")
    torch.testing.assert_close(embed_audio_files(load_model(tmp_path / "sm"), [p]), e, atol=1e-6, rtol=0)


def test_fusion_frontend_feeds_four_views(tiny_wav_factory):
    torch.manual_seed(0)
    cfg = {
        "embed_dim": 8,
        "towers": {
            "audio": {
                "modality": "audio",
                "encoder": {"type": "htsat", "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
                            "window_size": 4, "spec_size": 64, "n_mels": 16, "enable_fusion": True},
            }
        },
    }
    fe = get_preset("speech16k", n_mels=16, clip_samples=SR, fusion=True)
    m = MultiTowerModel.from_config(cfg, frontend=fe).eval()
    long_p = tiny_wav_factory("long.wav", seconds=3.2, sample_rate=SR, freq=300.0)
    short_p = tiny_wav_factory("short.wav", seconds=0.4, sample_rate=SR, freq=300.0)
    e = embed_audio_files(m, [long_p, short_p])
    assert e.shape == (2, 8)
    torch.testing.assert_close(embed_audio_files(m, [long_p]), e[:1], atol=1e-6, rtol=0)
    # the long clip really takes the fusion branch: its local crops change the output
    from audiocl.audio.frontend import compute_logmel, log_floor
    from audiocl.audio.io import load_mono
    from audiocl.audio.length import fusion_views

    mel = compute_logmel(load_mono(long_p, SR), fe)
    views, is_longer = fusion_views(mel, fe.clip_frames, key=str(long_p), pad_value=log_floor(fe))
    assert is_longer
    x = torch.from_numpy(np.ascontiguousarray(views))[None]
    with torch.no_grad():
        fused = m.towers.audio({"features": x, "is_longer": torch.tensor([True])})
        global_only = m.towers.audio({"features": x, "is_longer": torch.tensor([False])})
    torch.testing.assert_close(fused[0], e[0], atol=1e-5, rtol=0)
    assert not torch.allclose(fused, global_only)
