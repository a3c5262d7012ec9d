"""WebDataset export: tars read back with tarfile hold <key>.flac (48 kHz) + <key>.json."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocl.audio.frontend import get_preset
from audiocl.audio.io import load_mono
from audiocl.data.extract import extract
from audiocl.data.manifest import AudioItem, write_manifest
from audiocl.data.store import FeatureStore
from audiocl.data.webdataset import export_webdataset, sample_key


@pytest.fixture
def corpus(tmp_path: Path, shared_dir: Path) -> Path:
    esc = sorted((shared_dir / "data" / "esc50-sample" / "audio").glob("*.wav"))[:3]
    fsdd = sorted((shared_dir / "data" / "fsdd-dev" / "recordings").glob("*.wav"))[:2]
    items = [AudioItem(id=f"esc50/{p.stem}", path=str(p), labels=["dog"], custom={"fold": 2})
             for p in esc]
    items += [AudioItem(id=f"fsdd/{p.stem}.v1", path=str(p), texts=["zero", "the digit 0"],
                        speaker="jackson") for p in fsdd]
    items.append(AudioItem(id="broken", path=str(tmp_path / "none.wav")))
    m = tmp_path / "m.jsonl"
    write_manifest(items, m)
    return m


def read_tars(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_export_from_store_waveforms(corpus: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    extract(corpus, store_dir, get_preset("laion_clap"), kinds=("logmel", "waveform"),
            shard_size=4, runner="inline", progress=False)
    store = FeatureStore(store_dir)
    out = tmp_path / "wds"
    s = export_webdataset(store_dir, corpus, out, samples_per_tar=2,
                          text_template="This is a sound of {}.")
    assert s["samples"] == 5 and s["tars"] == 3 and s["audio_from_store"] == 5
    assert s["skipped_not_in_store"] == 1  # the broken item never made it into the store
    assert json.loads((out / "sizes.json").read_text()) == {
        "000000.tar": 2, "000001.tar": 2, "000002.tar": 1}
    with tarfile.open(out / "000000.tar") as tar:
        names = tar.getnames()
    assert names == ["esc50_2-103426-A-3.flac", "esc50_2-103426-A-3.json",
                     "esc50_2-103427-A-3.flac", "esc50_2-103427-A-3.json"]
    samples = read_tars(out)
    assert set(samples) == {sample_key(i) for i in store.ids()}
    for key, parts in samples.items():
        assert set(parts) == {"flac", "json"}
        meta = json.loads(parts["json"])
        assert key == sample_key(meta["id"])
        assert "." not in key and "/" not in key
        wav, sr = sf.read(io.BytesIO(parts["flac"]), dtype="float32")
        assert sr == 48000 and wav.ndim == 1
        np.testing.assert_array_equal(wav, store.waveform(meta["id"]))
        if meta["id"].startswith("esc50/"):
            assert meta["text"] == ["This is a sound of dog."] and meta["tag"] == ["dog"]
            assert meta["original_data"]["fold"] == 2
        else:
            assert meta["text"] == ["zero", "the digit 0"] and meta["tag"] == []
            assert meta["original_data"]["speaker"] == "jackson"


def test_export_redecodes_for_logmel_only_store_via_cli(corpus: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    extract(corpus, store_dir, get_preset("laion_clap"), shard_size=8, runner="inline",
            progress=False)
    out = tmp_path / "wds"
    r = subprocess.run([sys.executable, "-m", "audiocl.cli", "export", "webdataset",
                        "--store", str(store_dir), "--manifest", str(corpus), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["samples"] == 5 and s["audio_from_store"] == 0 and s["tars"] == 1
    samples = read_tars(out)
    item = next(k for k in samples if k.startswith("esc50_"))
    meta = json.loads(samples[item]["json"])
    wav, sr = sf.read(io.BytesIO(samples[item]["flac"]), dtype="float32")
    ref = load_mono(_path_of(corpus, meta["id"]), 48000)
    assert sr == 48000 and wav.shape == ref.shape
    np.testing.assert_allclose(wav, np.clip(ref, -1, 1), atol=1.5 / 32768)
    # a second export into the same folder is refused (one line, no traceback)
    r = subprocess.run([sys.executable, "-m", "audiocl.cli", "export", "webdataset",
                        "--store", str(store_dir), "--manifest", str(corpus), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already holds tars" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _path_of(manifest: Path, item_id: str) -> str:
    for line in manifest.read_text().splitlines():
        d = json.loads(line)
        if d["id"] == item_id:
            return d["path"]
    raise KeyError(item_id)


def test_sample_key() -> None:
    assert sample_key("a/b.c d") == "a_b_c_d"
    assert sample_key("...") == "item"
