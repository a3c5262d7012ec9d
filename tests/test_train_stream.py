"""Training from WebDataset shards (audiocl.data.stream) equals training from a feature store.

Real pieces: 96 FSDD clips; a feature store made by the project's extraction
(speech16k, 32 mels, 1 s clips; tests/train_store.py) and the same clips
written as LAION-layout shards (``<key>.flac`` + ``<key>.json`` with ``text``,
``tag``, ``id``) by webdataset's own ``ShardWriter``, 4 tars of 24, with a
``sizes.json``. FLAC is lossless on the 16-bit WAVs, so both routes decode the
same samples, resample them with the same soxr call and take the log-mel of
the whole clip with the same torch ``LogMel`` (extraction per clip; the stream
per clip on the CPU training device), then the same length policy
(``fit_clip``; rand_trunc crops seeded by batch and id).

What differs is only the order of the items: the stream permutes shards and
shuffles through a buffer, the store permutes items. The equality test gives
the store route the stream's order (``TrainData.order``), so every batch has
the same items; then the loss, lr, scale and gradient norm of every step, the
validation rows and the final weights are compared for exact float equality
(measured: bit-identical, no tolerance needed; on a GPU the stream's log-mel
would differ from a CPU-made store by float32 FFT rounding).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from train_store import build_store, model_config


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


@pytest.fixture(scope="module")
def shards(store, tmp_path_factory):
    import webdataset as wds

    from audiocl.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("shards")
    sizes = {}
    with wds.ShardWriter(str(out / "%06d.tar"), maxcount=24, verbose=0) as sink:
        for item in read_manifest(store[1]):
            x, sr = sf.read(item.path, dtype="int16")
            buf = io.BytesIO()
            sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
            sink.write({"__key__": item.id, "flac": buf.getvalue(),
                        "json": {"text": list(item.texts), "tag": list(item.labels), "id": item.id}})  # fmt: skip
    for tar in sorted(out.glob("*.tar")):
        import tarfile

        with tarfile.open(tar) as t:
            sizes[tar.name] = sum(1 for m in t if m.name.endswith(".flac"))
    (out / "sizes.json").write_text(json.dumps(sizes))
    return out


def _cfg(tmp: Path, name: str, data: dict, **train) -> dict:
    return {
        "model": model_config(),
        "loss": {"name": "clip"},
        "data": {"batch_size": 16, "micro_batch_size": 8, "max_frames": 48, "length_policy": "rand_trunc",
                 "num_workers": 0, **data},
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_steps": 3, "min_lr": 1e-5},
        "train": {"epochs": 2, "log_every": 1, "val_every": 6, "ckpt_every": 4, "keep_checkpoints": 10,
                  "seed": 7, "progress": False, "output_dir": str(tmp / name), **train},
    }  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


KEYS = ("step", "epoch", "loss", "lr", "scale", "grad_norm")


def test_shard_patterns_and_sizes(shards, tmp_path):
    from audiocl.data.stream import WebDatasetSource
    from audiocl.errors import AudioclError

    folder = WebDatasetSource(str(shards))
    brace = WebDatasetSource(str(shards / "{000000..000003}.tar"))
    assert len(folder) == len(brace) == 96 and folder.counted == 0
    assert [s.samples for s in brace.shards] == [24, 24, 24, 24]
    # without sizes.json the shards are counted from their headers
    bare = tmp_path / "bare"
    bare.mkdir()
    for t in shards.glob("00000[12].tar"):
        shutil.copy(t, bare / t.name)
    counted = WebDatasetSource(str(bare / "*.tar"))
    assert len(counted) == 48 and counted.counted == 2
    with pytest.raises(AudioclError, match=r"3 of the 5 shards .* do not exist"):
        WebDatasetSource(str(bare / "{000000..000004}.tar"))


def test_config_refuses_store_and_webdataset(store, shards):
    from audiocl.errors import InputError
    from audiocl.train.config import load_config

    with pytest.raises(InputError, match="give data.webdataset or data.store, not both"):
        load_config(None, [f"data.webdataset={shards}", f"data.store={store[0]}", "data.frontend=speech16k"])
    with pytest.raises(InputError, match="data.webdataset needs data.frontend"):
        load_config(None, [f"data.webdataset={shards}"])
    with pytest.raises(InputError, match="data.val_webdataset needs data.webdataset"):
        load_config(None, [f"data.val_webdataset={shards}"])


def test_stream_equals_store_given_the_same_batches(store, shards, tmp_path):
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import build_components, train

    fe = {"preset": "speech16k", "n_mels": 32, "clip_samples": 16000}
    s_cfg = TrainingConfig.model_validate(_cfg(tmp_path, "stream", {
        "webdataset": str(shards / "{000000..000003}.tar"), "val_webdataset": str(shards),
        "frontend": fe, "shuffle_buffer": 10}))  # fmt: skip
    st_cfg = TrainingConfig.model_validate(_cfg(tmp_path, "store", {
        "store": str(store[0]), "manifest": str(store[1]), "val_manifest": str(store[1])}))  # fmt: skip
    s_comp = build_components(s_cfg)
    source = s_comp.train_data.stream
    # the stream's batches, read without decoding: shards permuted, buffer-shuffled
    epochs = [source.epoch_ids(e, seed=7, shuffle=True, buffer=10, batch=16) for e in range(2)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[0], [])) == sorted(sum(epochs[1], []))
    assert len(set(sum(epochs[0], []))) == 96  # 96 // 16 = 6 steps: every sample once per epoch

    st_comp = build_components(st_cfg)
    assert st_comp.frontend.hash() == s_comp.frontend.hash()
    where = {i: n for n, i in enumerate(st_comp.train_data.dataset.ids)}
    st_comp.train_data.order = lambda epoch, seed: [where[i] for b in epochs[epoch] for i in b]

    a = train(s_cfg, components=s_comp)
    b = train(st_cfg, components=st_comp)
    assert a["steps"] == b["steps"] == 12
    ra, rb = _rows(tmp_path / "stream" / "train_log.csv"), _rows(tmp_path / "store" / "train_log.csv")
    assert [tuple(r[k] for k in KEYS) for r in ra] == [tuple(r[k] for k in KEYS) for r in rb]
    assert _rows(tmp_path / "stream" / "val_log.csv") == _rows(tmp_path / "store" / "val_log.csv")
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "stream" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "store" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    # the exported model carries the stream's front-end, like a store-trained one
    assert json.loads((tmp_path / "stream" / "model" / "frontend.json").read_text())["hash"] == s_comp.frontend.hash()


def test_stream_resumes_exactly(shards, tmp_path):
    from safetensors.torch import load_file

    from audiocl.errors import AudioclError
    from audiocl.train.checkpoint import list_checkpoints
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import train

    data = {"webdataset": str(shards), "frontend": {"preset": "speech16k", "n_mels": 32, "clip_samples": 16000},
            "shuffle_buffer": 10}  # fmt: skip
    cfg = TrainingConfig.model_validate(_cfg(tmp_path, "full", data, val_every=None))
    train(cfg)
    full = tmp_path / "full"
    assert [s for s, _ in list_checkpoints(full)] == [4, 8, 12]
    # the same run, stopped after step 8 (epoch 1, batch 2: inside an epoch)
    part = tmp_path / "part"
    shutil.copytree(full, part, ignore=shutil.ignore_patterns("step_00000012*", "model", "best"))
    assert [s for s, _ in list_checkpoints(part)] == [4, 8]
    cfg_part = TrainingConfig.model_validate(_cfg(tmp_path, "part", data, val_every=None))
    # two readers read the shards in another order: refused, naming the layout
    two = TrainingConfig.model_validate(_cfg(tmp_path, "part", {**data, "num_workers": 2}, val_every=None))
    with pytest.raises(AudioclError, match="readers"):
        train(two, resume=True)
    # one DataLoader worker process is one reader, like the in-process run
    one = cfg_part.model_copy(update={"data": cfg_part.data.model_copy(update={"num_workers": 1})})
    train(one, resume=True)
    ra, rb = _rows(full / "train_log.csv"), _rows(part / "train_log.csv")
    assert [r["step"] for r in rb] == [str(i) for i in range(1, 13)]
    assert [tuple(r[k] for k in KEYS) for r in ra] == [tuple(r[k] for k in KEYS) for r in rb]
    wa = load_file(str(full / "checkpoints" / "step_00000012" / "model.safetensors"))
    wb = load_file(str(part / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_ranks_read_their_own_shards(shards):
    """2 ranks x 1 reader: each rank's batches come from its own half of the epoch's
    shard permutation, none shared, with the same number of steps (what DDP needs)."""
    import tarfile

    from audiocl.audio.frontend import get_preset
    from audiocl.data.stream import StreamCollate, WebDatasetSource

    source = WebDatasetSource(str(shards))
    collate = StreamCollate(get_preset("speech16k", n_mels=32, clip_samples=16000), 48, "rand_trunc")
    owner = {}
    for s in source.shards:
        with tarfile.open(s.path) as t:
            owner.update({m.name.split(".")[0]: s.path for m in t})
    order = source.shard_order(1, 7, True)
    seen = []
    for rank in (0, 1):
        sampler = source.sampler(16, rank=rank, world=2, seed=7, shuffle=True, buffer=10, readers=1, collate=collate)
        sampler.set_epoch(1)
        batches = list(sampler.loader(0))
        assert len(batches) == len(sampler) == 6 and all(len(b["ids"]) == 8 for b in batches)
        ids = [i for b in batches for i in b["ids"]]
        mine = {source.shards[i].path for i in order[rank::2]}
        assert {owner[i] for i in ids} == mine
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 96
