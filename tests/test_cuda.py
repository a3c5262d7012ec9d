"""The training path on a CUDA device: prefetch, on-device log-mel, bf16, compile, Ray + NCCL.

Every test here is marked ``cuda`` and skips without a CUDA device (a CPU
torch build, or no GPU visible). ``benchmarks/gpu_check.py`` runs them with
``pytest -m cuda`` on a lent GPU. They need nothing outside the repository:
the clips are synthesised tones (written as WAV and extracted into a real
store with the project's own extraction) or Debian sounds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CPU torch or no GPU visible)"),
]

DEV = torch.device("cuda", 0)
WORDS = ["low", "mid", "high", "chirp"]


def _tones(n: int, sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = int(sr * seconds)
    t = np.arange(T) / sr
    out = np.empty((n, T), dtype=np.float32)
    for i in range(n):
        f0 = 150.0 * 2 ** (i % 12 / 6)
        out[i] = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.2 * t)) + 0.01 * rng.standard_normal(T)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real store of 24 synthesised clips (speech16k log-mel, 32 mels)."""
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.manifest import AudioItem, write_manifest

    root = tmp_path_factory.mktemp("cuda_store")
    items = []
    for i, wav in enumerate(_tones(24, 16000, 0.8)):
        p = root / f"c{i:02d}.wav"
        sf.write(p, wav[: 6000 + 400 * i], 16000)
        items.append(AudioItem(id=p.stem, path=str(p), texts=[f"a {WORDS[i % 4]} tone", f"tone {i}"],
                               labels=[WORDS[i % 4]]))  # fmt: skip
    manifest = root / "manifest.jsonl"
    write_manifest(items, manifest)
    extract(manifest, root / "store", get_preset("speech16k", n_mels=32), runner="inline", progress=False,
            shard_size=8)  # fmt: skip
    return root / "store", manifest


def _cfg(store: tuple[Path, Path], out: Path, **train: object) -> object:
    from audiocl.train.config import TrainingConfig

    return TrainingConfig.model_validate({
        "model": {
            "embed_dim": 16,
            "towers": {
                "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8,
                          "n_mels": 32}, "projection": {"type": "linear"}},
                "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1,
                         "heads": 2, "max_length": 32}, "projection": {"type": "linear"}},
            },
        },
        "loss": {"name": "clip"},
        "data": {"store": str(store[0]), "manifest": str(store[1]), "batch_size": 8, "max_frames": 60,
                 "length_policy": "repeatpad", "num_workers": 1},
        "optim": {"lr": 1e-3},
        # constant: a run cut at step 2 and resumed sees the same learning rates
        "schedule": {"kind": "constant"},
        "train": {"max_steps": 4, "log_every": 1, "progress": False, "ckpt_every": 2, "output_dir": str(out),
                  "device": "cuda", **train},
    })  # fmt: skip


def _losses(run: Path) -> list[float]:
    with open(run / "train_log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_prefetcher_yields_the_loader_batches_on_the_device():
    from audiocl.train.device import CudaPrefetcher

    x = torch.randn(40, 7)
    ds = torch.utils.data.TensorDataset(x, torch.arange(40))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, pin_memory=True, num_workers=1,
        collate_fn=lambda rows: {"x": torch.stack([r[0] for r in rows]), "i": [r[1] for r in rows], "n": len(rows)},
    )  # fmt: skip
    seen = []
    w = torch.randn(7, 7, device=DEV)
    for b in CudaPrefetcher(loader, DEV):
        assert b["x"].device.type == "cuda" and b["n"] == 8
        assert all(t.device.type == "cuda" for t in b["i"])
        # compute on the default stream while the next copy runs on the side stream
        seen.append((b["x"] @ w).cpu())
    ref = [(x[i : i + 8].to(DEV) @ w).cpu() for i in range(0, 40, 8)]
    assert len(seen) == 5
    for a, r in zip(seen, ref):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("preset", ["laion_clap", "aisfx", "whisper"])
def test_logmel_on_cuda_matches_cpu(preset):
    from audiocl.audio.frontend import LogMel, get_preset

    fe = get_preset(preset)
    wav = torch.from_numpy(_tones(3, fe.sample_rate, 3.0, seed=1))
    cpu = LogMel(fe)
    gpu = LogMel(fe).to(DEV)
    with torch.no_grad():
        ref = torch.stack([cpu(w) for w in wav])
        got = gpu(wav.to(DEV)).cpu()
    assert got.shape == ref.shape
    # float32 FFT on both, risky frames redone in float64 (LogMel._refine): well under 0.01 dB
    assert float((got - ref).abs().max()) < 5e-3


def test_device_features_on_cuda_match_cpu():
    """Streamed batches: the log-mel made on the GPU equals the CPU's (clips of mixed lengths)."""
    from audiocl.audio.frontend import get_preset
    from audiocl.data.stream import DeviceFeatures

    fe = get_preset("laion_clap")
    wav = torch.from_numpy(_tones(4, fe.sample_rate, 2.0, seed=2))
    lengths = torch.tensor([96000, 96000, 60000, 30000])
    for i, n in enumerate(lengths.tolist()):
        wav[i, n:] = 0
    F = 180
    frames = (lengths // fe.hop_length + 1).tolist()
    index = torch.stack([torch.where(torch.arange(F) < f, torch.arange(F) % f, -1) for f in frames])
    index[3, 40:] = -1

    def batch() -> dict:
        return {"waveform": wav.clone(), "wav_lengths": lengths.clone(), "frame_index": index.clone()}

    ref = DeviceFeatures(fe)(batch())["features"]
    from audiocl.train.data import to_device

    got = DeviceFeatures(fe)(to_device(batch(), DEV))["features"]
    assert got.device.type == "cuda"
    assert float((got.cpu() - ref).abs().max()) < 5e-3


def test_bf16_loss_is_float32_and_close_to_fp32():
    from audiocl.losses import build_loss
    from audiocl.models import MultiTowerModel
    from audiocl.train.accumulate import forward_backward

    torch.manual_seed(0)
    model = MultiTowerModel.from_config({
        "embed_dim": 16,
        "towers": {"audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8,
                             "n_mels": 32}, "projection": {"type": "mlp"}},
                   "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1,
                            "heads": 2}, "projection": {"type": "linear"}}},
    }).to(DEV)  # fmt: skip
    model.eval()  # no dropout: the two runs see the same function
    inputs = {"audio": torch.randn(16, 50, 32, device=DEV), "text": [f"tone {i}" for i in range(16)]}
    loss_fn = build_loss("clip")
    res = {}
    for name in ("fp32", "bf16"):
        def ctx(n=name):
            return torch.autocast("cuda", dtype=torch.bfloat16, enabled=n == "bf16")

        model.zero_grad(set_to_none=True)
        out = forward_backward(model, loss_fn, inputs, None, autocast=ctx, device=DEV)
        assert out.loss.dtype == torch.float32
        assert out.outputs["logit_scale"].dtype == torch.float32
        assert all(e.dtype == torch.float32 for e in out.outputs["embeddings"].values())
        res[name] = float(out.loss)
    assert math.isfinite(res["bf16"])
    assert res["bf16"] == pytest.approx(res["fp32"], abs=3e-2)


def test_trainer_on_cuda_bf16_prefetch_and_exact_resume(store, tmp_path):
    """4 bf16 steps on the GPU from a store (pinned loader, prefetcher); 2 + resume 2 gives the same losses."""
    from audiocl.train.run import train

    straight = tmp_path / "straight"
    train(_cfg(store, straight, precision="bf16"))
    a = _losses(straight)
    assert len(a) == 4 and all(math.isfinite(v) for v in a)

    parts = tmp_path / "parts"
    train(_cfg(store, parts, precision="bf16", max_steps=2))
    train(_cfg(store, parts, precision="bf16"), resume=True)
    b = _losses(parts)
    assert len(b) == 4
    # same batches in the same order; cuDNN/bf16 kernels need not be bitwise reproducible
    assert b == pytest.approx(a, abs=1e-2)
    assert (straight / "model" / "model.safetensors").is_file()


def test_trainer_compile_on_cuda(store, tmp_path):
    from safetensors.torch import load_file

    from audiocl.train.run import train

    train(_cfg(store, tmp_path / "compiled", compile=True, max_steps=3))
    losses = _losses(tmp_path / "compiled")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    keys = load_file(str(tmp_path / "compiled" / "model" / "model.safetensors")).keys()
    # compiled in place: checkpoints keep the plain parameter names
    assert not any("_orig_mod" in k for k in keys)


@pytest.mark.slow
def test_ray_train_on_one_gpu_with_nccl(store, tmp_path):
    """distributed.gpus=1: Ray places the worker on the GPU, NCCL group, the run exports its model."""
    from audiocl.train.config import TrainingConfig
    from audiocl.train.distributed import train_distributed

    cfg = _cfg(store, tmp_path / "ray", max_steps=2)
    raw = cfg.to_dict()
    raw["train"]["device"] = "auto"
    raw["distributed"] = {"workers": 1, "gpus": 1}
    summary = train_distributed(TrainingConfig.model_validate(raw))
    assert summary["model_dir"] is not None
    assert (tmp_path / "ray" / "model" / "model.safetensors").is_file()
    assert all(math.isfinite(v) for v in _losses(tmp_path / "ray"))
    from audiocl.train.checkpoint import find_latest

    # the rank trained on the GPU: its checkpointed RNG state holds the CUDA generator's
    rng = torch.load(find_latest(tmp_path / "ray") / "rng_rank0.pt", weights_only=True)
    assert "cuda" in rng


def test_trainer_on_cpu_config_with_cuda_machine_uses_no_gpu(store, tmp_path):
    """train.device=cpu stays on the CPU where a GPU exists (no pinned copies, no prefetcher)."""
    from audiocl.train.checkpoint import find_latest
    from audiocl.train.run import train

    train(_cfg(store, tmp_path / "cpu", device="cpu", max_steps=2))
    rng = torch.load(find_latest(tmp_path / "cpu") / "rng_rank0.pt", weights_only=True)
    assert "cuda" not in rng
