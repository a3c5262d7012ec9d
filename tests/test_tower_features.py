"""A frozen aisfx tower's outputs extracted once into a real store (Ray), used by training.

Real ESC-50 clips, the real aisfx weights, a real Ray actor pool; the store is
tiny (4 clips, 2 shards) so the Ray start-up dominates.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocl.audio.frontend import get_preset
from audiocl.data.extract import extract
from audiocl.data.store import FeatureStore, content_hash
from audiocl.data.tower_features import (
    extract_tower_features,
    load_tower_features,
    prime_tower_cache,
    tower_identity,
)
from audiocl.errors import AudioclError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("aisfx") is None, reason="aisfx not installed (pip install --no-deps aisfx==0.1.2)"
)

CLIPS = ("2-103426-A-3.wav", "2-104105-A-19.wav", "2-104952-A-16.wav", "5-151085-A-20.wav")


def model_config(frozen: bool = True) -> dict:
    return {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "aisfx"}, "frozen": frozen, "cache": frozen,
                      "projection": {"type": "linear"}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2},
                     "projection": {"type": "linear"}},
        },
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("towerfeat")
    rows = [{"id": n[:-4], "path": str(shared_dir / "data/esc50-sample/audio" / n), "texts": [n.split("-")[-1]]}
            for n in CLIPS]
    # one clip cut to 1.5 s: a clip shorter than one 100-frame block
    rows[1]["duration"] = 1.5
    man = root / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "store"
    extract(man, out, get_preset("aisfx"), shard_size=2, runner="inline", progress=False)
    return out


def test_ray_extraction_matches_the_encoder_and_training_uses_it(store: Path, tmp_path: Path) -> None:
    from audiocl.models import MultiTowerModel
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import build_components

    before = content_hash(store)
    summary = extract_tower_features(store, model_config(), "audio", workers=1, runner="ray")
    assert summary["computed_this_run"] == 4 and summary["shards"] == 2
    assert content_hash(store) == before  # additive: shards, index and parameters untouched
    features = json.loads((store / "features.json").read_text())
    (key, entry), = features["towers"].items()
    assert entry["encoder"] == "aisfx" and key == f"aisfx-{entry['weights_sha256'][:12]}"

    fs = FeatureStore(store)
    model = MultiTowerModel(model_config(), frontend=get_preset("aisfx"))
    enc = model.towers["audio"].encoder
    assert entry["weights_sha256"] == tower_identity({"type": "aisfx"}, enc)["weights_sha256"]
    ids, rows = load_tower_features(store, tower_identity({"type": "aisfx"}, enc))
    with torch.no_grad():
        direct = torch.cat([enc(torch.from_numpy(np.array(fs[i]))[None]) for i in ids]).numpy()
    assert np.abs(rows - direct).max() < 1e-5 * max(1.0, float(np.abs(direct).max()))

    # a second run finds every shard done
    assert extract_tower_features(store, model_config(), "audio", runner="inline")["computed_this_run"] == 0

    # training: build_components primes the frozen tower's cache; the encoder never runs for those ids
    cfg = TrainingConfig.model_validate({
        "model": model_config(),
        "data": {"store": str(store), "manifest": str(store.parent / "m.jsonl"), "inputs": {"audio": "features", "text": "texts"}, "batch_size": 2,
                 "length_policy": "pad+trunc", "max_frames": 150},
        "train": {"output_dir": str(tmp_path / "exp")},
    })
    comp = build_components(cfg)
    tower = comp.model.towers["audio"]
    assert len(tower.cache) == 4
    calls = []
    tower.encoder.register_forward_hook(lambda *a: calls.append(1))
    item = [comp.train_data.dataset[i] for i in range(2)]
    batch = comp.train_data.to_inputs(comp.train_data.collate(item, 0), (0, 0, 0))
    assert batch["audio_ids"] == [it["id"] for it in item]
    with torch.no_grad():
        h = tower.encode(batch["audio"], batch["audio_lengths"], batch["audio_ids"])
    assert calls == [] and tower.cache.hits == 2
    want = torch.from_numpy(rows[[ids.index(it["id"]) for it in item]])
    torch.testing.assert_close(h, want)


def test_stale_or_unfrozen_towers_are_refused(store: Path) -> None:
    from audiocl.models import MultiTowerModel

    with pytest.raises(AudioclError, match="towers.audio is not frozen"):
        extract_tower_features(store, model_config(frozen=False), "audio", runner="inline")
    # other weights (a randomly initialised aisfx): its outputs are not in the store
    cfg = model_config()
    cfg["towers"]["audio"]["encoder"]["pretrained"] = False
    torch.manual_seed(0)
    m = MultiTowerModel(cfg)
    with pytest.raises(AudioclError, match="no embeddings of encoder aisfx with weights") as e:
        prime_tower_cache(m.towers["audio"], store)
    assert "\n" not in str(e.value)
