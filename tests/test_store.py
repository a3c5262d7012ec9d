"""The sharded feature store: atomic shard writes, index, memmap reads, refusal of
mixed parameters, content hash. Synthetic arrays; extraction is in test_extract.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audiocl.data.store import (
    FeatureStore,
    StoreParams,
    StoreWriter,
    content_hash,
    summarize_store,
    verify_store,
)
from audiocl.errors import AudioclError

FRONTEND = {"sample_rate": 16000, "n_mels": 8, "hop_length": 160, "n_fft": 400}


def params(**kw) -> StoreParams:
    fe = dict(FRONTEND)
    fe.update(kw.pop("frontend", {}))
    return StoreParams(frontend=fe, frontend_hash=json.dumps(fe, sort_keys=True), **kw)


def fill(out: Path, p: StoreParams, shards: int = 3, per: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    w = StoreWriter.create(out, p)
    truth = {}
    for s in range(shards):
        entries, mels, wavs, errors = [], [], [], []
        for j in range(per):
            item_id = f"s{s}-i{j}"
            if j == per - 1:
                errors.append({"id": item_id, "path": f"/x/{item_id}.wav", "reason": "silent",
                               "message": "every sample is exactly zero"})
                continue
            n = int(rng.integers(1, 30))
            mel = rng.standard_normal((n, p.n_mels)).astype(np.float32) * 20
            wav = (rng.standard_normal(n * 160) * 0.1).astype(np.float32)
            entries.append({"id": item_id})
            mels.append(mel)
            wavs.append(wav)
            truth[item_id] = (mel, wav)
        w.write_shard(s, f"spec{s}", entries,
                      mels if "logmel" in p.kinds else None,
                      wavs if "waveform" in p.kinds else None, errors)
    w.finalize(shards)
    return truth


def test_roundtrip_memmap_views_and_index(tmp_path: Path) -> None:
    out = tmp_path / "store"
    truth = fill(out, params())
    store = FeatureStore(out)
    assert len(store) == len(truth) == 9
    assert store.ids() == sorted(truth, key=lambda k: (k.split("-")[0], k))
    for item_id, (mel, _) in truth.items():
        got = store[item_id]
        assert isinstance(got, np.memmap) or isinstance(got.base, np.memmap)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, mel)
        assert store.num_frames(item_id) == mel.shape[0]
    # the view is read-only: the store cannot be corrupted through it
    with pytest.raises(ValueError):
        store[next(iter(truth))][0, 0] = 1.0
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert "shard-000000.npy" in names and "shard-000002.done" in names
    assert not [n for n in names if "tmp" in n]
    errs = store.errors()
    assert [e["id"] for e in errs] == ["s0-i3", "s1-i3", "s2-i3"]
    assert {e["reason"] for e in errs} == {"silent"}
    with pytest.raises(KeyError, match="not in the store"):
        store["nope"]
    assert verify_store(out) == []


def test_float16_and_waveform(tmp_path: Path) -> None:
    out = tmp_path / "store"
    truth = fill(out, params(dtype="float16", kinds=("logmel", "waveform")))
    store = FeatureStore(out)
    for item_id, (mel, wav) in truth.items():
        assert store[item_id].dtype == np.float16
        np.testing.assert_allclose(store[item_id].astype(np.float32), mel, atol=0.05, rtol=1e-3)
        got = store.waveform(item_id)
        assert got.shape == wav.shape
        # 16-bit FLAC: quantisation step 1/32768
        np.testing.assert_allclose(got, np.clip(wav, -1, 1), atol=1.5 / 32768)


def test_waveform_only_store_refuses_logmel_reads(tmp_path: Path) -> None:
    out = tmp_path / "store"
    truth = fill(out, params(kinds=("waveform",)))
    store = FeatureStore(out)
    item_id = next(iter(truth))
    assert store.waveform(item_id).shape == truth[item_id][1].shape
    with pytest.raises(AudioclError, match="waveforms only"):
        store[item_id]


def test_other_parameters_are_refused_naming_keys(tmp_path: Path) -> None:
    out = tmp_path / "store"
    fill(out, params())
    before = content_hash(out)
    with pytest.raises(AudioclError, match=r"other parameters.*frontend\.n_mels: 8 in the store, 64 requested"):
        StoreWriter.create(out, params(frontend={"n_mels": 64}), resume=True)
    with pytest.raises(AudioclError, match="dtype"):
        StoreWriter.create(out, params(dtype="float16"), resume=True)
    # same parameters but no --resume: refused too, nothing touched
    with pytest.raises(AudioclError, match="--resume"):
        StoreWriter.create(out, params())
    assert content_hash(out) == before


def test_non_store_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(AudioclError, match="not empty"):
        StoreWriter.create(tmp_path, params())
    with pytest.raises(AudioclError, match="not a feature store"):
        FeatureStore(tmp_path)


def test_content_hash_sensitive_and_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    fill(a, params(), seed=1)
    fill(b, params(), seed=1)
    fill(c, params(), seed=2)
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(c)
    # one flipped byte in a shard changes the hash and fails verification
    shard = a / "shards" / "shard-000001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert content_hash(a) != content_hash(b)
    assert verify_store(a) == ["shard-000001.npy: content differs from its marker"]


def test_resume_marker_and_unfinished_store(tmp_path: Path) -> None:
    out = tmp_path / "store"
    p = params()
    w = StoreWriter.create(out, p)
    mel = np.ones((3, p.n_mels), np.float32)
    w.write_shard(0, "h0", [{"id": "a"}], [mel], None, [])
    assert w.is_done(0, "h0")
    assert not w.is_done(0, "other-spec")
    assert not w.is_done(1, "h1")
    # a truncated shard file invalidates the marker
    npy = out / "shards" / "shard-000000.npy"
    npy.write_bytes(npy.read_bytes()[:-4])
    assert not w.is_done(0, "h0")
    with pytest.raises(AudioclError, match="unfinished"):
        w.finalize(2)
    with pytest.raises(AudioclError, match="unfinished"):
        FeatureStore(out)


def test_duplicate_ids_across_shards_refused(tmp_path: Path) -> None:
    p = params()
    w = StoreWriter.create(tmp_path / "s", p)
    mel = np.ones((2, p.n_mels), np.float32)
    w.write_shard(0, "h0", [{"id": "x"}], [mel], None, [])
    w.write_shard(1, "h1", [{"id": "x"}], [mel], None, [])
    with pytest.raises(AudioclError, match="twice"):
        w.finalize(2)


def test_summarize_store(tmp_path: Path) -> None:
    out = tmp_path / "store"
    truth = fill(out, params(kinds=("logmel", "waveform")))
    s = summarize_store(out)
    assert s["items"] == 9 and s["failed"] == 3
    assert s["failed_by_reason"] == {"silent": 3}
    assert s["shards"] == 3
    assert s["frames"]["total"] == sum(m.shape[0] for m, _ in truth.values())
    assert s["config"]["n_mels"] == 8
    assert s["duration_seconds"]["total"] == pytest.approx(
        sum(w.shape[0] for _, w in truth.values()) / 16000
    )


def test_bad_params_rejected() -> None:
    with pytest.raises(AudioclError):
        params(kinds=("spectrogram",))
    with pytest.raises(AudioclError):
        params(dtype="int8")
    with pytest.raises(AudioclError):
        params(min_duration=5.0, max_duration=1.0)
