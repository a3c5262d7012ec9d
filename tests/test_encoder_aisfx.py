"""The ``aisfx`` front-end preset and encoder against independent references.

References are written here from the published facts (aisfx 0.1.2's Essentia
path and its ``EmbeddingNet`` / ``blocking`` code, read from the installed
wheel, never imported): a numpy/librosa log-mel, and the checkpoint's weights
applied with plain torch ops. Real clips: ``../shared/data/esc50-sample``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiocl.audio.frontend import (
    PRESETS,
    FrontendConfig,
    LogMel,
    compute_logmel,
    get_preset,
    log_floor,
)
from audiocl.audio.io import RESAMPLER, load_mono
from audiocl.errors import AudioclError
from audiocl.models.encoders import aisfx as aisfx_mod
from audiocl.models.encoders import build_encoder

HAVE_AISFX = importlib.util.find_spec("aisfx") is not None
needs_aisfx = pytest.mark.skipif(not HAVE_AISFX, reason="aisfx not installed (pip install --no-deps aisfx==0.1.2)")

CLIPS = ("2-103426-A-3.wav", "2-104105-A-19.wav", "2-104952-A-16.wav")  # cow, thunderstorm, wind
MX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize 'original'


def _clip(shared_dir: Path, name: str) -> np.ndarray:
    return load_mono(shared_dir / "data/esc50-sample/audio" / name, 44100)


# ----------------------------------------------------------------------------- references
def reference_logmel(wav: np.ndarray) -> np.ndarray:
    """Essentia-path log-mel from the facts, float64: [frames, 96]."""
    import librosa

    n_fft, hop = 2048, 1024
    x = np.pad(wav.astype(np.float64), (n_fft // 2, n_fft // 2))  # centred, zeros
    n = 1 + (x.size - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] for i in range(n)])
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2
    fb = librosa.filters.mel(sr=44100, n_fft=n_fft, n_mels=96, fmin=0.0, fmax=22050.0, htk=True, norm=None,
                             dtype=np.float64)
    fb = fb / fb.sum(axis=1, keepdims=True)  # unit_sum
    return np.log10(1e4 * (power @ fb.T) + 1.0) / MX


def _safe_load_reference(path: Path) -> dict[str, torch.Tensor]:
    from numpy._core.multiarray import scalar

    allow = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    with torch.serialization.safe_globals(allow):
        sd, _ = torch.load(str(path), map_location="cpu", weights_only=True)
    return sd


def reference_embedding(spec: np.ndarray, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """aisfx blocking(100, hop 50, drop_partial_block) + EmbeddingNet by plain ops, max over blocks."""
    block, hop = 100, 50
    num = int(np.ceil((spec.shape[0] - block) / hop + 1))
    if (spec.shape[0] - block) % hop != 0:
        num -= 1
    num = max(num, 1)
    data = np.vstack((spec, np.zeros((block, spec.shape[1]))))
    blocks = np.stack([data[i * hop : i * hop + block] for i in range(num)])
    x = torch.tensor(blocks, dtype=torch.float32).unsqueeze(1)

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], training=False, eps=1e-5)

    for i, pool in ((1, 2), (2, 2), (3, 2), (4, 1)):
        p = f"embedding_net.conv_block{i}"
        x = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], padding=1), p + ".bn1"))
        x = F.relu(bn(F.conv2d(x, sd[p + ".conv2.weight"], padding=1), p + ".bn2"))
        x = F.max_pool2d(x, pool) if pool > 1 else x
    per_block = x.mean(dim=3).max(dim=2).values  # [num, 512]
    return per_block.max(dim=0).values


# ----------------------------------------------------------------------------- front-end
def test_existing_presets_keep_their_hash_and_parameters() -> None:
    """The fields added later (norm_mean, norm_std, drop_last_frame) do not enter older configs' hash."""
    new = {"norm_mean", "norm_std", "drop_last_frame"}
    for name, cfg in PRESETS.items():
        if name in ("aisfx", "whisper"):
            continue
        old_params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in new}
        payload = {"format": "audiocl.frontend/1", "params": old_params, "resampler": RESAMPLER}
        old_hash = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert cfg.hash() == old_hash, name
        assert cfg.to_dict() == old_params, name
        assert FrontendConfig.from_dict(cfg.describe()) == cfg
    # used, they are recorded and change the hash
    base = PRESETS["laion_clap"]
    moved = base.replace(norm_mean=-40.0, norm_std=40.0)
    assert moved.hash() != base.hash() and moved.to_dict()["norm_std"] == 40.0
    assert FrontendConfig.from_dict(moved.describe()) == moved
    wav = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    np.testing.assert_allclose(compute_logmel(wav, moved), (compute_logmel(wav, base) + 40.0) / 40.0, atol=1e-4)


def test_aisfx_preset_matches_reference_logmel_on_real_clips(shared_dir: Path) -> None:
    cfg = get_preset("aisfx")
    assert cfg.to_dict()["norm_std"] == MX and cfg.clip_samples is None
    for name in CLIPS:
        wav = _clip(shared_dir, name)
        ours = compute_logmel(wav, cfg)
        ref = reference_logmel(wav)
        assert ours.shape == ref.shape == (wav.size // 1024 + 1, 96)
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    # digital silence is what the pad value says (log10(0 + 1) = 0)
    assert log_floor(cfg) == 0.0
    assert float(np.abs(compute_logmel(np.zeros(44100, np.float32), cfg)).max()) == 0.0


def test_unit_sum_refuses_empty_bands() -> None:
    with pytest.raises(AudioclError, match="mel bands hold no FFT bin"):
        LogMel(get_preset("aisfx", n_fft=256, win_length=256, hop_length=128))


# ----------------------------------------------------------------------------- loading
def test_missing_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aisfx_mod, "AISFX_PACKAGE", "aisfx_not_installed_here")
    with pytest.raises(AudioclError, match=r"pip install --no-deps aisfx==0\.1\.2") as e:
        build_encoder({"type": "aisfx"})
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this calls os.system (writing a marker file): what a poisoned checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_malicious_checkpoint_is_refused_without_running_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # a fake "aisfx" package first on sys.path: find_spec locates it, its
    # __init__ would write a second marker if audiocl ever imported it
    pkg = tmp_path / "site" / "aisfx"
    (pkg / "models").mkdir(parents=True)
    imported = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(imported)!r}, 'w').close()\n")
    marker = tmp_path / "pwned"
    ckpt = pkg / "models" / "checkpoint.pth"
    payload = ({"embedding_net.x": torch.zeros(1)}, {"ds": _Payload(marker)})
    if fmt == "torch_zip":
        torch.save(payload, str(ckpt))
    else:
        ckpt.write_bytes(pickle.dumps(payload))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert aisfx_mod.aisfx_checkpoint_path() == ckpt
    with pytest.raises(AudioclError) as e:
        build_encoder({"type": "aisfx"})
    msg = str(e.value)
    assert msg.startswith(f"{ckpt}: refused to load") and "\n" not in msg
    assert not marker.exists() and not imported.exists()
    # the same payload really runs code when unpickled without weights_only
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@needs_aisfx
def test_checkpoint_loads_embedding_net_only() -> None:
    sd = aisfx_mod.load_aisfx_state_dict()
    assert not any(k.startswith(("fc.", "embedding_net.")) for k in sd)
    n = sum(v.numel() for k, v in sd.items() if k.endswith(("weight", "bias")))
    assert n == 4_686_144  # 4.69 M parameters
    enc = build_encoder({"type": "aisfx"})
    assert enc.output_dim == 512
    assert torch.equal(enc.conv_block4.conv2.weight, sd["conv_block4.conv2.weight"])


# ----------------------------------------------------------------------------- encoder parity
@needs_aisfx
def test_encoder_matches_reference_forward_on_real_clips(shared_dir: Path) -> None:
    sd = _safe_load_reference(aisfx_mod.aisfx_checkpoint_path())
    enc = build_encoder({"type": "aisfx"}).eval()
    cfg = get_preset("aisfx")
    # three lengths: one block padded (1.2 s), two blocks (3.1 s), three blocks (5 s)
    wavs = [_clip(shared_dir, n)[: int(s * 44100)] for n, s in zip(CLIPS, (1.2, 3.1, 5.0))]
    refs = torch.stack([reference_embedding(reference_logmel(w), sd) for w in wavs])
    mels = [torch.from_numpy(compute_logmel(w, cfg)) for w in wavs]
    with torch.no_grad():
        alone = torch.cat([enc(m[None]) for m in mels])
        # one padded batch, padded with junk: padding must not change any item
        T = max(m.shape[0] for m in mels)
        batch = torch.full((3, T, 96), 7.0)
        for i, m in enumerate(mels):
            batch[i, : m.shape[0]] = m
        lens = torch.tensor([m.shape[0] for m in mels])
        batched = enc(batch, lens)
    scale = float(refs.abs().max())
    assert scale > 0.1
    assert float((alone - refs).abs().max()) < 1e-4 * max(1.0, scale)
    assert float((batched - alone).abs().max()) < 1e-5 * max(1.0, scale)
    # different sounds, different embeddings
    cos = F.normalize(refs, dim=1) @ F.normalize(refs, dim=1).T
    assert float(cos[0, 1]) < 0.99


def test_blocks_and_gradients_without_pretrained_weights() -> None:
    assert aisfx_mod.block_starts(52, 100, 50) == [0]
    assert aisfx_mod.block_starts(149, 100, 50) == [0]
    assert aisfx_mod.block_starts(150, 100, 50) == [0, 50]
    assert aisfx_mod.block_starts(216, 100, 50) == [0, 50, 100]
    enc = build_encoder({"type": "aisfx", "pretrained": False})
    x = torch.randn(2, 160, 96, requires_grad=True)
    out = enc(x, torch.tensor([160, 40]))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    out.sum().backward()
    g = x.grad
    assert g is not None and float(g[0].abs().sum()) > 0
    assert float(g[1, 40:].abs().max()) == 0.0  # frames past the length do not count
    with pytest.raises(AudioclError, match="96 mel bands"):
        enc(torch.zeros(1, 100, 64))


# ----------------------------------------------------------------------------- towers and folders
@needs_aisfx
def test_frozen_cached_tower_and_model_folder_with_licenses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audiocl.models import MultiTowerModel

    cfg = {
        "embed_dim": 32,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "aisfx"}, "frozen": True, "cache": True,
                      "projection": {"type": "linear"}},
            "text": {"modality": "text", "encoder": {"type": "hf_text"}, "frozen": True,
                     "projection": {"type": "linear"}},
        },
    }
    model = MultiTowerModel(cfg, frontend=get_preset("aisfx"))
    tw = model.towers["audio"]
    x = torch.rand(2, 120, 96)
    lens = torch.tensor([120, 80])
    a = tw(x, lens, ids=["a", "b"])
    b = tw(x, lens, ids=["a", "b"])
    assert torch.equal(a, b) and tw.cache.hits == 2 and tw.cache.misses == 2
    with torch.no_grad():
        direct = tw.encoder(x, lens)
    assert torch.allclose(tw.encode(x, lens, ["a", "b"]), direct, atol=1e-6)

    out = model.save_pretrained(tmp_path / "m")
    text = (out / "LICENSES.md").read_text()
    assert "## tower `audio` (encoder `aisfx`)" in text and "aisfx==0.1.2" in text
    assert "CC BY 4.0" in text and "Alison B. Ma" in text
    assert "## tower `text` (encoder `hf_text`)" in text and "Apache-2.0" in text and "all-MiniLM-L6-v2" in text
    # the folder is self-contained: loading never looks for the aisfx package
    monkeypatch.setattr(aisfx_mod, "AISFX_PACKAGE", "aisfx_not_installed_here")
    back = MultiTowerModel.from_pretrained(out)
    with torch.no_grad():
        np.testing.assert_allclose(back.towers["audio"].encoder(x, lens), direct, atol=1e-6)
    assert back.frontend == get_preset("aisfx")
    assert math.isclose(back.frontend.norm_std, MX)
    # licences survive load -> save, though the loaded towers did not read the published weights
    assert back.licenses == model.licenses
    again = back.save_pretrained(tmp_path / "m2")
    assert (again / "LICENSES.md").read_text() == text


def test_random_init_carries_no_licence_and_hf_export_names_unsupported_towers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from audiocl.cli import main
    from audiocl.interop.hf import model_to_hf
    from audiocl.models import MultiTowerModel

    cfg = {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "aisfx", "pretrained": False}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2}},
        },
    }
    model = MultiTowerModel(cfg, frontend=get_preset("aisfx"))
    assert model.licenses == {}
    out = model.save_pretrained(tmp_path / "m")
    assert not (out / "LICENSES.md").exists()
    with pytest.raises(AudioclError, match=r"unsupported tower\(s\): 'audio' \(audio, aisfx\), 'text' \(text, small_text\)"):
        model_to_hf(model, tmp_path / "hf")
    assert main(["convert", "hf", "--model", str(out), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "htsat" in err[0] and "'audio' (audio, aisfx)" in err[0]
