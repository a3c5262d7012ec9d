"""Corpora read in place: WebDataset tars, Hugging Face datasets and lhotse manifests.

The inputs are built with the real libraries (``webdataset.ShardWriter`` in the
LAION layout, ``datasets.Dataset.save_to_disk``, lhotse ``CutSet.to_file``) from
a dozen real FSDD clips; then ``audiocl prepare``, ``extract`` (under Ray),
``train`` and ``eval`` run from each. The HF dataset is written without
``datasets``' audio encoder (it needs torchcodec, not installed): the column is
built as ``{bytes, path}`` structs and cast to ``Audio(decode=False)``, which is
exactly how ``datasets`` stores embedded audio.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("webdataset")
pytest.importorskip("datasets")
pytest.importorskip("lhotse")

from audiocl.cli import main  # noqa: E402
from audiocl.data.manifest import AudioItem, load_manifest, write_manifest  # noqa: E402

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N = 12
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _clips(shared: Path) -> list[tuple[Path, str, str, str]]:
    """(file, stem, digit word, speaker) of N FSDD clips over all ten digits."""
    files = sorted((shared / "data" / "fsdd-dev" / "recordings").glob("*.wav"))
    by_digit: dict[str, list[Path]] = {}
    for f in files:
        by_digit.setdefault(f.stem.split("_")[0], []).append(f)
    picked = [by_digit[str(d)][k] for k in range(2) for d in range(10)][:N]
    out = []
    for f in picked:
        digit, speaker, _ = f.stem.split("_")
        out.append((f, f.stem, DIGITS[int(digit)], speaker))
    return out


def _flac(path: Path) -> bytes:
    x, sr = sf.read(path, dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def build_webdataset(clips, out: Path) -> Path:
    import webdataset as wds

    out.mkdir(parents=True)
    with wds.ShardWriter(str(out / "%06d.tar"), maxcount=5, verbose=0) as w:
        for f, stem, word, speaker in clips:
            w.write({"__key__": stem, "flac": _flac(f),
                     "json": {"text": [f"{speaker} says {word}", f"the word {word}"], "tag": [word],
                              "original_data": {"speaker": speaker, "file": f.name}}})
    sizes = {t.name: sum(1 for m in tarfile.open(t) if m.name.endswith(".flac"))
             for t in sorted(out.glob("*.tar"))}
    (out / "sizes.json").write_text(json.dumps(sizes))
    return out


def build_hf(clips, out: Path, null_row: int | None = None) -> Path:
    import datasets

    rows = {"audio": [], "text": [], "label": [], "speaker_id": [], "file": []}
    for i, (f, _stem, word, speaker) in enumerate(clips):
        rows["audio"].append(None if i == null_row else {"bytes": f.read_bytes(), "path": f.name})
        rows["text"].append(f"{speaker} says {word}")
        rows["label"].append(DIGITS.index(word))
        rows["speaker_id"].append(speaker)
        rows["file"].append(f.name)
    ds = datasets.Dataset.from_dict(rows)
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    ds = ds.cast_column("label", datasets.ClassLabel(names=DIGITS))
    half = len(clips) // 2 + 1
    datasets.DatasetDict({"train": ds.select(range(half)), "test": ds.select(range(half, len(clips)))}
                         ).save_to_disk(str(out))
    return out


def build_lhotse(clips, out: Path) -> Path:
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs = [Recording.from_file(f, recording_id=stem) for f, stem, _w, _s in clips]
    sups = [SupervisionSegment(id=stem, recording_id=stem, start=0.0, duration=r.duration,
                               text=f"{speaker} says {word}", speaker=speaker, language="en",
                               custom={"labels": [word]})
            for r, (_f, stem, word, speaker) in zip(recs, clips)]
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups))
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(out)
    return out


def _model_cfg() -> dict:
    return {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio",
                      "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4, "n_mels": 32},
                      "projection": {"type": "linear"}},
            "text": {"modality": "text",
                     "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2,
                                 "max_length": 32},
                     "projection": {"type": "linear"}},
        },
    }


@pytest.fixture(scope="module")
def corpora(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("corpora")
    clips = _clips(shared_dir)
    return {
        "clips": clips, "root": root,
        "webdataset": build_webdataset(clips, root / "shards"),
        "hf": build_hf(clips, root / "hf"),
        "lhotse": build_lhotse(clips, root / "lhotse" / "cuts.jsonl.gz"),
    }


def _run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.slow
def test_prepare_extract_train_eval_from_each_source(corpora, tmp_path, capsys):
    import yaml

    from audiocl.audio.frontend import compute_logmel, get_preset
    from audiocl.audio.io import load_mono
    from audiocl.data.extract import extract
    from audiocl.data.store import FeatureStore

    clips = corpora["clips"]
    truth = {stem: (f, word, speaker) for f, stem, word, speaker in clips}
    manifests = {}
    for source in ("webdataset", "hf", "lhotse"):
        m = tmp_path / f"{source}.jsonl"
        rc, out, err = _run(capsys, "prepare", source, "--root", str(corpora[source]), "--out", str(m))
        assert rc == 0, err
        assert f"wrote {N} items" in out
        manifests[source] = m

    # what each source says about each clip, mapped back to the FSDD stem
    wds_items = load_manifest(manifests["webdataset"])
    assert [it.id for it in wds_items] == [f"webdataset/{stem}" for _f, stem, _w, _s in clips]
    for it in wds_items:
        f, word, speaker = truth[it.id.split("/", 1)[1]]
        assert it.texts == [f"{speaker} says {word}", f"the word {word}"] and it.labels == [word]
        assert it.speaker == speaker and it.ref["kind"] == "tar" and it.path.endswith(".tar")
        assert it.custom["original_data"]["file"] == f.name
        assert it.num_samples == sf.info(f).frames
    assert len({it.path for it in wds_items}) == 3  # 5 + 5 + 2 samples
    hf_items = load_manifest(manifests["hf"])
    assert [it.split for it in hf_items] == ["train"] * 7 + ["test"] * 5
    for it in hf_items:
        f, word, speaker = truth[Path(it.custom["file"]).stem]
        assert it.texts == [f"{speaker} says {word}"] and it.labels == [word] and it.speaker == speaker
        assert it.ref["kind"] == "arrow" and it.path.endswith(".arrow")
    lh_items = load_manifest(manifests["lhotse"])
    for it in lh_items:
        f, word, speaker = truth[Path(it.path).stem]
        assert it.id.startswith(f"{f.stem}-")  # CutSet.from_manifests names cuts <rec>-<n>
        assert it.path == str(f) and it.ref is None  # a plain file: lhotse points at it
        assert it.texts == [f"{speaker} says {word}"] and it.labels == [word]
        assert (it.speaker, it.language) == (speaker, "en")

    # audiocl info reads the three sources in place
    for source in ("webdataset", "hf", "lhotse"):
        rc, out, err = _run(capsys, "info", str(corpora[source]), "--json")
        assert rc == 0, err
        s = json.loads(out)
        assert (s["kind"], s["items"], s["labels"]["distinct"]) == (source, N, 10)

    # one extraction under Ray of all three: the workers read tar members, arrow rows, files
    combined = tmp_path / "all.jsonl"
    write_manifest([*wds_items, *hf_items, *lh_items], combined)
    store_dir = tmp_path / "store"
    r = subprocess.run(
        [sys.executable, "-m", "audiocl", "extract", "--manifest", str(combined), "--out", str(store_dir),
         "--preset", "speech16k", "--set", "n_mels=32", "--set", "clip_samples=16000",
         "--workers", "2", "--shard-size", "9", "--json"],
        capture_output=True, text=True, timeout=400, env=ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"]) == (3 * N, 0)
    store = FeatureStore(store_dir)
    fe = get_preset("speech16k", n_mels=32, clip_samples=16000)
    # the same clip gives the same log-mel whichever container it came in
    for it in (wds_items[3], hf_items[4], lh_items[5]):
        stem = it.id.split("/", 1)[1] if it.ref and it.ref["kind"] == "tar" else (
            Path(it.custom["file"]).stem if it.ref else Path(it.path).stem)
        want = compute_logmel(load_mono(truth[stem][0], fe.sample_rate), fe)
        np.testing.assert_array_equal(np.asarray(store[it.id]), want)
    # resumable: a second run (same planning and markers; in process, no Ray) does nothing
    again = extract(combined, store_dir, fe, resume=True, use_ray=False, progress=False, shard_size=9)
    assert (again["shards_resumed"], again["processed_this_run"], again["done"]) == (4, 0, 3 * N)

    # train a few steps from each source's items, then evaluate from the source itself
    for source, m in manifests.items():
        out = tmp_path / f"exp-{source}"
        cfg = {
            "model": _model_cfg(), "loss": {"name": "clip"},
            "data": {"store": str(store_dir), "manifest": str(m), "batch_size": 6, "max_frames": 64},
            "optim": {"lr": 0.01},
            "train": {"max_steps": 2, "log_every": 1, "seed": 0, "progress": False, "output_dir": str(out)},
        }
        (tmp_path / f"{source}.yaml").write_text(yaml.safe_dump(cfg))
        rc, _out, err = _run(capsys, "train", "--config", str(tmp_path / f"{source}.yaml"))
        assert rc == 0, err
        res_path = tmp_path / f"zs-{source}.json"
        rc, _out, err = _run(capsys, "eval", "zeroshot", "--model", str(out / "model"),
                             "--manifest", str(m), "--out", str(res_path))
        assert rc == 0, err
        res = json.loads(res_path.read_text())
        assert (res["n_items"], res["n_classes"]) == (N, 10)
