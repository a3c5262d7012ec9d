"""Training straight from a manifest (data.stream_manifest) equals training from a feature store.

Real pieces: 32 FSDD clips written by ``datasets`` itself into a ``save_to_disk``
folder (an ``Audio`` column of embedded WAV bytes, a ``ClassLabel``, captions as
lists), turned into a manifest by ``audiocl prepare hf`` (items are arrow rows,
no audio copied). The store is made from that same manifest by the project's
extraction (speech16k, 32 mels, 1 s clips). Both routes decode the row with
``load_item_mono``, take the torch ``LogMel`` of the whole clip (per clip on the
CPU), and fit it with ``fit_clip`` (rand_trunc crops seeded by batch and id).

The batch order is the same by construction: both use the trainer's
``GlobalBatchSampler`` over the items in manifest order. The store route's
default order is the store-shard-aware ``ShardShuffleSampler`` permutation
(a manifest has no store shards), so the test sets the store route's
``TrainData.order`` to None, the plain ``(seed, epoch)`` permutation the
manifest route uses. Then every logged step value, the validation rows and the
final weights are compared for exact float equality.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from train_store import DIGITS, model_config

pytest.importorskip("datasets")

from audiocl.cli import main  # noqa: E402

N = 32
FE = {"preset": "speech16k", "n_mels": 32, "clip_samples": 16000}
KEYS = ("step", "epoch", "loss", "lr", "scale", "grad_norm")


@pytest.fixture(scope="module")
def corpus(shared_dir, tmp_path_factory):
    """(manifest from `audiocl prepare hf`, store extracted from it)."""
    import datasets

    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract

    root = tmp_path_factory.mktemp("mstream")
    files = sorted((shared_dir / "data" / "fsdd-dev" / "recordings").glob("*.wav"))
    by_digit: dict[str, list[Path]] = {}
    for f in files:
        by_digit.setdefault(f.stem.split("_")[0], []).append(f)
    picked = [by_digit[str(d)][k] for k in range(4) for d in range(10)][:N]
    rows: dict[str, list] = {"audio": [], "text": [], "label": [], "speaker_id": [], "id": []}
    for f in picked:
        digit, speaker, _ = f.stem.split("_")
        word = DIGITS[int(digit)]
        rows["audio"].append({"bytes": f.read_bytes(), "path": f.name})
        rows["text"].append([f"{speaker} says {word}", f"the word {word}"])
        rows["label"].append(int(digit))
        rows["speaker_id"].append(speaker)
        rows["id"].append(f.stem)
    ds = datasets.Dataset.from_dict(rows)
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    ds = ds.cast_column("label", datasets.ClassLabel(names=DIGITS))
    ds.save_to_disk(str(root / "hf"))
    manifest = root / "train.jsonl"
    assert main(["prepare", "hf", "--root", str(root / "hf"), "--out", str(manifest)]) == 0
    extract(manifest, root / "store", get_preset("speech16k", n_mels=32, clip_samples=16000), runner="inline", progress=False, shard_size=8)
    return manifest, root / "store"


def _cfg(tmp: Path, name: str, data: dict, **train) -> dict:
    return {
        "model": model_config(),
        "loss": {"name": "clip"},
        "data": {"batch_size": 8, "max_frames": 48, "length_policy": "rand_trunc",
                 "num_workers": 0, **data},
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_steps": 2, "min_lr": 1e-5},
        "train": {"epochs": 2, "log_every": 1, "val_every": 8, "ckpt_every": 3, "keep_checkpoints": 10,
                  "seed": 7, "progress": False, "output_dir": str(tmp / name), **train},
    }  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_config_refuses_mixed_sources(corpus):
    from audiocl.errors import InputError
    from audiocl.train.config import load_config

    manifest, store = corpus
    with pytest.raises(InputError, match="give data.stream_manifest or data.store, not both"):
        load_config(None, [f"data.stream_manifest={manifest}", f"data.store={store}", "data.frontend=speech16k"])
    with pytest.raises(InputError, match="give data.stream_manifest or data.webdataset, not both"):
        load_config(None, [f"data.stream_manifest={manifest}", f"data.webdataset={store}", "data.frontend=speech16k"])
    with pytest.raises(InputError, match="data.stream_manifest needs data.frontend"):
        load_config(None, [f"data.stream_manifest={manifest}"])
    with pytest.raises(InputError, match="data.val_stream_manifest needs data.stream_manifest"):
        load_config(None, [f"data.val_stream_manifest={manifest}"])


def test_manifest_stream_equals_store(corpus, tmp_path):
    from audiocl.data.manifest import load_manifest
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import build_components, train

    manifest, store = corpus
    items = load_manifest(manifest)
    assert len(items) == N and all(it.ref and it.ref["kind"] == "arrow" for it in items)
    assert items[0].texts == [f"{items[0].speaker} says {items[0].labels[0]}", f"the word {items[0].labels[0]}"]

    m_cfg = TrainingConfig.model_validate(_cfg(tmp_path, "manifest", {
        "stream_manifest": str(manifest), "val_stream_manifest": str(manifest), "frontend": FE}))  # fmt: skip
    s_cfg = TrainingConfig.model_validate(_cfg(tmp_path, "store", {
        "store": str(store), "manifest": str(manifest), "val_manifest": str(manifest)}))  # fmt: skip
    m_comp, s_comp = build_components(m_cfg), build_components(s_cfg)
    assert m_comp.frontend.hash() == s_comp.frontend.hash()
    # the same items at the same indices, so the same sampler gives the same batches
    assert m_comp.train_data.dataset.ids == s_comp.train_data.dataset.ids == [it.id for it in items]
    assert m_comp.train_data.order is None
    s_comp.train_data.order = None  # the store route's shard-aware shuffle -> the plain permutation

    a = train(m_cfg, components=m_comp)
    b = train(s_cfg, components=s_comp)
    assert a["steps"] == b["steps"] == 8
    ra, rb = _rows(tmp_path / "manifest" / "train_log.csv"), _rows(tmp_path / "store" / "train_log.csv")
    assert len(ra) == 8 and len({r["loss"] for r in ra}) > 1
    assert [tuple(r[k] for k in KEYS) for r in ra] == [tuple(r[k] for k in KEYS) for r in rb]
    va, vb = _rows(tmp_path / "manifest" / "val_log.csv"), _rows(tmp_path / "store" / "val_log.csv")
    assert len(va) == 1 and va == vb
    wa = _weights(tmp_path / "manifest" / "model" / "model.safetensors")
    wb = _weights(tmp_path / "store" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_manifest_stream_resumes_exactly(corpus, tmp_path):
    from audiocl.train.checkpoint import list_checkpoints
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import train

    manifest, _store = corpus
    data = {"stream_manifest": str(manifest), "frontend": FE}
    train(TrainingConfig.model_validate(_cfg(tmp_path, "full", data, val_every=None)))
    full = tmp_path / "full"
    assert [s for s, _ in list_checkpoints(full)] == [3, 6, 8]
    # stopped after step 6 (epoch 1, batch 2: inside an epoch)
    part = tmp_path / "part"
    shutil.copytree(full, part, ignore=shutil.ignore_patterns("step_00000008*", "model", "best"))
    assert [s for s, _ in list_checkpoints(part)] == [3, 6]
    # resumed with the items decoded in a DataLoader worker process
    train(TrainingConfig.model_validate(_cfg(tmp_path, "part", {**data, "num_workers": 1}, val_every=None)),
          resume=True)  # fmt: skip
    ra, rb = _rows(full / "train_log.csv"), _rows(part / "train_log.csv")
    assert [r["step"] for r in rb] == [str(i) for i in range(1, 9)]
    assert [tuple(r[k] for k in KEYS) for r in ra] == [tuple(r[k] for k in KEYS) for r in rb]
    wa = _weights(full / "checkpoints" / "step_00000008" / "model.safetensors")
    wb = _weights(part / "checkpoints" / "step_00000008" / "model.safetensors")
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_decode_failure_stops_or_skips(corpus, tmp_path, capsys):
    """An item whose arrow row is gone: one line naming the id and the row; on_missing=skip trains on."""
    from dataclasses import replace

    from audiocl.data.manifest import load_manifest, write_manifest
    from audiocl.errors import AudioclError
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import train

    manifest, _store = corpus
    items = load_manifest(manifest)[:8]
    bad = replace(items[3], ref={**items[3].ref, "row": 999})
    broken = tmp_path / "broken.jsonl"
    write_manifest([*items[:3], bad, *items[4:]], broken)
    data = {"stream_manifest": str(broken), "frontend": FE, "batch_size": 4}
    cfg = TrainingConfig.model_validate(_cfg(tmp_path, "stop", data, epochs=1, val_every=None))
    with pytest.raises(AudioclError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and f"item {bad.id!r}" in msg and "row 999" in msg and "data.on_missing=skip" in msg
    capsys.readouterr()
    skip = TrainingConfig.model_validate(_cfg(tmp_path, "skip", {**data, "on_missing": "skip"}, epochs=1,
                                              val_every=None))  # fmt: skip
    assert train(skip)["steps"] == 2
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "left out of its batch" in ln]
    assert warned and all(bad.id in ln and "row 999" in ln for ln in warned)
