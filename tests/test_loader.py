"""FeatureDataset, ShardShuffleSampler and collate_features over a synthetic store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audiocl.audio.frontend import get_preset
from audiocl.data.loader import (
    FeatureDataset,
    ShardShuffleSampler,
    collate_features,
    log_floor,
)
from audiocl.data.manifest import AudioItem, write_manifest
from audiocl.data.store import FeatureStore, StoreParams, StoreWriter
from audiocl.errors import AudioclError

CFG = get_preset("speech16k", n_mels=8)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """5 shards x 6 items (one failed per shard), frames 3..40, and a manifest."""
    rng = np.random.default_rng(0)
    out = tmp_path / "store"
    w = StoreWriter.create(out, StoreParams.from_frontend(CFG, shard_size=6))
    truth: dict[str, np.ndarray] = {}
    items = []
    for s in range(5):
        entries, mels, errors = [], [], []
        for j in range(6):
            item_id = f"clip{s}{j}"
            items.append(AudioItem(id=item_id, path=f"{item_id}.wav", texts=[f"text {item_id}"],
                                   labels=[f"lab{j % 3}"], split="train" if j % 2 else "test",
                                   custom={"fold": s}))
            if j == 5:
                errors.append({"id": item_id, "path": "x", "reason": "silent", "message": "m"})
                continue
            mel = rng.standard_normal((int(rng.integers(3, 41)), 8)).astype(np.float32)
            entries.append({"id": item_id})
            mels.append(mel)
            truth[item_id] = mel
        w.write_shard(s, f"h{s}", entries, mels, None, errors)
    w.finalize(5)
    manifest = tmp_path / "m.jsonl"
    write_manifest(items, manifest)
    return out, manifest, truth


def test_dataset_without_manifest(store) -> None:
    out, _, truth = store
    ds = FeatureDataset(out)
    assert len(ds) == len(truth) == 25
    ex = ds[3]
    assert set(ex) >= {"id", "features", "texts", "labels"}
    assert "_pad_value" not in collate_features([ex])
    assert torch.equal(ex["features"], torch.from_numpy(truth[ex["id"]]))
    assert ex["texts"] == [] and ex["labels"] == []
    assert ds.pad_value == pytest.approx(np.log(1e-6))


def test_dataset_joins_manifest_and_skips_failed(store) -> None:
    out, manifest, truth = store
    ds = FeatureDataset(out, manifest, fields=("fold",))
    assert len(ds) == 25
    assert sorted(ds.missing) == [f"clip{s}5" for s in range(5)]
    ex = ds[ds.ids.index("clip21")]
    assert ex["texts"] == ["text clip21"] and ex["labels"] == ["lab1"]
    assert ex["fold"] == 2 and ex["split"] == "train"
    train = FeatureDataset(out, manifest, split="train")
    assert {ds_id[-1] for ds_id in train.ids} == {"1", "3"}
    chosen = FeatureDataset(out, manifest, ids=["clip44", "clip00"])
    assert chosen.ids == ["clip44", "clip00"]
    with pytest.raises(AudioclError, match="not in both"):
        FeatureDataset(out, manifest, ids=["clip05"])  # failed extraction


def test_collate_pad_to_longest(store) -> None:
    out, manifest, truth = store
    ds = FeatureDataset(out, manifest)
    batch = [ds[i] for i in range(4)]
    b = collate_features(batch)  # the pad value comes with the examples
    n = [truth[e["id"]].shape[0] for e in batch]
    assert b["features"].shape == (4, max(n), 8)
    assert b["lengths"].tolist() == n
    assert b["ids"] == [e["id"] for e in batch]
    assert b["texts"] == [e["texts"] for e in batch]
    for i, e in enumerate(batch):
        assert torch.equal(b["features"][i, : n[i]], torch.from_numpy(truth[e["id"]]))
        assert (b["features"][i, n[i]:] == ds.pad_value).all()


def test_collate_policies_and_lengths(store) -> None:
    out, _, truth = store
    ds = FeatureDataset(out)
    short = next(i for i, k in enumerate(ds.ids) if truth[k].shape[0] < 10)
    long_ = next(i for i, k in enumerate(ds.ids) if truth[k].shape[0] > 25)
    ns, nl = truth[ds.ids[short]].shape[0], truth[ds.ids[long_]].shape[0]
    batch = [ds[short], ds[long_]]
    b = collate_features(batch, max_frames=20, policy="repeatpad")
    assert b["features"].shape == (2, 20, 8)
    assert b["lengths"].tolist() == [(20 // ns) * ns, 20]
    assert torch.equal(b["features"][0, :ns], batch[0]["features"])
    assert torch.equal(b["features"][0, ns : 2 * ns], batch[0]["features"])
    assert torch.equal(b["features"][1], batch[1]["features"][:20])  # trunc from the start
    assert collate_features(batch, max_frames=20, policy="pad")["lengths"].tolist() == [ns, 20]
    assert collate_features(batch, max_frames=20, policy="repeat")["lengths"].tolist() == [20, 20]
    # rand_trunc: seeded per item id, independent of the batch position
    r1 = collate_features([ds[long_], ds[short]], 20, "repeatpad+rand_trunc", seed=3)
    r2 = collate_features([ds[short], ds[long_]], 20, "repeatpad+rand_trunc", seed=3)
    assert torch.equal(r1["features"][0], r2["features"][1])
    crops = {
        tuple(collate_features([ds[long_]], 20, "rand_trunc", seed=s)["features"][0, 0, :2].tolist())
        for s in range(8)
    }
    assert len(crops) > 1 and nl > 20


def test_sampler_deterministic_shuffle_across_shards(store) -> None:
    out, _, _ = store
    ds = FeatureDataset(out)
    shards = ds.shards()
    s = ShardShuffleSampler(shards, seed=7)
    e0 = list(s)
    assert sorted(e0) == list(range(len(ds)))
    assert e0 == list(ShardShuffleSampler(shards, seed=7))
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) == sorted(e0)
    # the first items come from several shards, not one shard after another
    assert len(set(shards[e0[:8]].tolist())) >= 3
    # windowed: each consecutive block of a window's items comes from <= window shards
    sw = ShardShuffleSampler(shards, seed=1, window=2)
    order = list(sw)
    assert sorted(order) == list(range(len(ds)))
    first_block = shards[order[:10]]
    assert len(set(first_block.tolist())) == 2


def test_sampler_resume_and_replicas(store) -> None:
    out, _, _ = store
    shards = FeatureDataset(out).shards()
    s = ShardShuffleSampler(shards, seed=3)
    s.set_epoch(2)
    full = list(s)
    state = s.state_dict(position=10)
    r = ShardShuffleSampler(shards, seed=3)
    r.load_state_dict(state)
    assert list(r) == full[10:] and len(r) == len(full) - 10
    with pytest.raises(AudioclError, match="seed"):
        ShardShuffleSampler(shards, seed=4).load_state_dict(state)
    parts = [list(ShardShuffleSampler(shards, seed=3, num_replicas=3, rank=k)) for k in range(3)]
    assert all(len(p) == 9 for p in parts)  # 25 items padded to 27
    assert set().union(*parts) == set(range(25))


def test_dataloader_with_workers(store) -> None:
    out, manifest, truth = store
    ds = FeatureDataset(FeatureStore(out), manifest)
    dl = DataLoader(ds, batch_size=8, sampler=ShardShuffleSampler(ds.shards(), seed=0),
                    collate_fn=collate_features, num_workers=1)
    seen = []
    for b in dl:
        for i, item_id in enumerate(b["ids"]):
            n = int(b["lengths"][i])
            assert torch.equal(b["features"][i, :n], torch.from_numpy(truth[item_id]))
        seen += b["ids"]
    assert sorted(seen) == sorted(truth)


def test_log_floor_matches_frontend() -> None:
    assert log_floor(get_preset("laion_clap")) == pytest.approx(-100.0)
    assert log_floor(get_preset("speech16k")) == pytest.approx(np.log(1e-6))


def test_waveform_dataset_and_collate(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    out = tmp_path / "wstore"
    w = StoreWriter.create(out, StoreParams.from_frontend(CFG, kinds=("waveform",)))
    wavs = {f"w{i}": (0.2 * rng.standard_normal(int(rng.integers(400, 3000)))).astype(np.float32)
            for i in range(4)}
    w.write_shard(0, "h", [{"id": k} for k in wavs], None, list(wavs.values()), [])
    w.finalize(1)
    with pytest.raises(AudioclError, match="holds no logmel"):
        FeatureDataset(out)
    ds = FeatureDataset(out, kind="waveform")
    assert ds.num_frames().tolist() == [v.size for v in wavs.values()]
    batch = [ds[i] for i in range(4)]
    b = collate_features(batch)
    assert b["features"].shape == (4, max(v.size for v in wavs.values()))
    for i, k in enumerate(b["ids"]):
        n = wavs[k].size
        assert b["lengths"][i] == n
        np.testing.assert_allclose(b["features"][i, :n].numpy(), wavs[k], atol=1.5 / 32768)
        assert (b["features"][i, n:] == 0).all()
    b = collate_features(batch, max_frames=1000, policy="repeatpad")
    assert b["features"].shape == (4, 1000)
