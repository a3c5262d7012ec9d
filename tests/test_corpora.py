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
    again = extract(combined, store_dir, fe, resume=True, runner="inline", progress=False, shard_size=9)
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


def _fsdd_manifest(clips, path: Path) -> list[AudioItem]:
    """An audiocl manifest of the clips (probed like `prepare`), with a segment of one
    file as a second item of that file and a custom field."""
    from audiocl.audio.io import probe

    items = []
    for f, stem, word, speaker in clips:
        info = probe(f)
        facts = {k: info[k] for k in ("sampling_rate", "num_samples", "channels", "duration")}
        items.append(AudioItem(id=f"fsdd/{stem}", path=str(f), texts=[f"{speaker} says {word}", f"the word {word}"],
                               labels=[word], speaker=speaker, language="en", split="train",
                               source="fsdd", license="CC BY-SA 4.0", custom={"digit": DIGITS.index(word)},
                               **facts))
    f = clips[0][0]
    items.append(AudioItem(id="fsdd/segment", path=str(f), start=0.1, duration=0.25,
                           sampling_rate=8000, num_samples=sf.info(f).frames, channels=1,
                           texts=["a part"], labels=[clips[0][2]]))
    write_manifest(items, path)
    return items


@pytest.mark.parametrize("fmt", ["cuts", "recordings"])
def test_lhotse_round_trip(corpora, tmp_path, capsys, fmt):
    import lhotse
    from lhotse.dataset import DynamicBucketingSampler

    src = tmp_path / "m.jsonl"
    items = _fsdd_manifest(corpora["clips"], src)
    rc, out, err = _run(capsys, "export", "lhotse", "--manifest", str(src), "--out", str(tmp_path / "lh"),
                        "--format", fmt)
    assert rc == 0, err
    summary = json.loads(out)
    assert (summary["items"], summary["recordings"]) == (N + 1, N)  # the segment shares a file

    if fmt == "cuts":
        cuts = lhotse.load_manifest_lazy(tmp_path / "lh" / "cuts.jsonl.gz")
        args = ["--root", str(tmp_path / "lh" / "cuts.jsonl.gz")]
    else:
        recs = lhotse.load_manifest(tmp_path / "lh" / "recordings.jsonl.gz")
        sups = lhotse.load_manifest(tmp_path / "lh" / "supervisions.jsonl.gz")
        assert isinstance(recs, lhotse.RecordingSet) and isinstance(sups, lhotse.SupervisionSet)
        cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(
            keep_overlapping=False)
        args = ["--recordings", str(tmp_path / "lh" / "recordings.jsonl.gz"),
                "--supervisions", str(tmp_path / "lh" / "supervisions.jsonl.gz")]
    # lhotse's own sampler and loader take it: every item, the same samples
    sampler = DynamicBucketingSampler(cuts, max_duration=3.0, num_buckets=2, shuffle=True, seed=0)
    seen = [c for batch in sampler for c in batch]
    assert len(seen) == N + 1
    by_sup = {c.supervisions[0].id: c for c in seen}
    seg = by_sup["fsdd/segment"]
    x, sr = sf.read(corpora["clips"][0][0], dtype="float32")
    np.testing.assert_allclose(seg.load_audio()[0], x[800:800 + 2000], atol=1e-6)
    assert by_sup["fsdd/" + corpora["clips"][1][1]].supervisions[0].text == items[1].texts[0]

    back = tmp_path / "back.jsonl"
    rc, _out, err = _run(capsys, "prepare", "lhotse", *args, "--out", str(back))
    assert rc == 0, err
    # the same manifest, byte for byte (ids, paths, segments, facts, texts, labels, custom)
    assert back.read_text() == src.read_text()


def test_export_lhotse_refuses_items_inside_containers(corpora, tmp_path, capsys):
    m = tmp_path / "w.jsonl"
    assert _run(capsys, "prepare", "webdataset", "--root", str(corpora["webdataset"]), "--out", str(m))[0] == 0
    rc, _out, err = _run(capsys, "export", "lhotse", "--manifest", str(m), "--out", str(tmp_path / "lh"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "000000.tar" in err and "export webdataset" in err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_members_rows_and_recordings_are_named(corpora, tmp_path, capsys):
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.store import FeatureStore

    clips = corpora["clips"][:6]
    fe = get_preset("speech16k", n_mels=32, clip_samples=16000)

    # a tar with a corrupt member and a sample whose audio member is missing
    tar = tmp_path / "bad" / "000000.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i, (f, stem, word, _s) in enumerate(clips):
            data = _flac(f)
            if i == 2:  # the FLAC header survives, the frames are garbage
                data = data[:300] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - 300, np.uint8))
            for name, blob in ([] if i == 4 else [(f"{stem}.flac", data)]) + [
                    (f"{stem}.json", json.dumps({"text": word, "tag": [word]}).encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    m = tmp_path / "w.jsonl"
    rc, _out, err = _run(capsys, "prepare", "webdataset", "--root", str(tar.parent), "--out", str(m))
    line = _one_line(err)
    assert rc == 2 and str(tar) in line and repr(clips[4][1]) in line and "no audio member" in line
    assert not m.exists()
    rc, out, err = _run(capsys, "prepare", "webdataset", "--root", str(tar.parent), "--out", str(m),
                        "--on-missing", "skip")
    assert rc == 0 and "wrote 5 items" in out and f"{tar}:{clips[4][1]}" in out
    s = extract(m, tmp_path / "s1", fe, runner="inline", progress=False)
    assert (s["done"], s["failed"]) == (4, 1)
    errors = [json.loads(x) for x in (tmp_path / "s1" / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["reason"], e["path"]) for e in errors] == [
        (f"webdataset/{clips[2][1]}", "unreadable", f"{tar}:{clips[2][1]}.flac")]
    # a tar rewritten after prepare: the recorded offsets are stale -> "missing", not wrong audio
    items = load_manifest(m)
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for f, stem, _w, _s in clips[1:]:
            info = tarfile.TarInfo(f"{stem}.flac")
            blob = _flac(f)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    s = extract(m, tmp_path / "s2", fe, runner="inline", progress=False)
    reasons = {json.loads(x)["id"]: json.loads(x)["reason"]
               for x in (tmp_path / "s2" / "errors.jsonl").read_text().splitlines()}
    assert reasons and set(reasons.values()) <= {"missing", "unreadable"} and "missing" in reasons.values()
    assert s["done"] + s["failed"] == len(items)

    # an HF row with no audio
    hf = build_hf(clips, tmp_path / "hf", null_row=3)
    rc, _out, err = _run(capsys, "prepare", "hf", "--root", str(hf), "--out", str(tmp_path / "h.jsonl"))
    line = _one_line(err)
    assert rc == 2 and "data-00000-of-00001.arrow" in line and "row 3 has no audio" in line
    rc, out, err = _run(capsys, "prepare", "hf", "--root", str(hf), "--out", str(tmp_path / "h.jsonl"),
                        "--on-missing", "skip")
    assert rc == 0 and "wrote 5 items" in out and "row 3" in out
    s = extract(tmp_path / "h.jsonl", tmp_path / "s3", fe, runner="inline", progress=False)
    assert (s["done"], s["failed"]) == (5, 0)
    assert FeatureStore(tmp_path / "s3").ids() and "hf/train/3" not in FeatureStore(tmp_path / "s3")

    # a lhotse recording whose file is missing: at prepare, and after it
    gone = tmp_path / "gone"
    gone.mkdir()
    copies = []
    for f, stem, word, speaker in clips:
        (gone / f.name).write_bytes(f.read_bytes())
        copies.append((gone / f.name, stem, word, speaker))
    cuts = build_lhotse(copies, tmp_path / "lh" / "cuts.jsonl.gz")
    (gone / clips[1][0].name).unlink()
    rc, _out, err = _run(capsys, "prepare", "lhotse", "--root", str(cuts), "--out", str(tmp_path / "l.jsonl"))
    line = _one_line(err)
    assert rc == 2 and "cuts.jsonl.gz" in line and clips[1][1] in line and "audio file not found" in line
    rc, out, err = _run(capsys, "prepare", "lhotse", "--root", str(cuts), "--out", str(tmp_path / "l.jsonl"),
                        "--on-missing", "skip")
    assert rc == 0 and "wrote 5 items" in out
    (gone / clips[2][0].name).unlink()
    s = extract(tmp_path / "l.jsonl", tmp_path / "s4", fe, runner="inline", progress=False)
    errors = [json.loads(x) for x in (tmp_path / "s4" / "errors.jsonl").read_text().splitlines()]
    assert (s["done"], s["failed"]) == (4, 1)
    assert [(e["reason"], e["path"]) for e in errors] == [("missing", str(gone / clips[2][0].name))]


def test_manifest_ref_field_is_validated_and_optional(tmp_path):
    from audiocl.errors import InputError

    plain = AudioItem(id="a", path="/x.wav")
    assert "ref" not in plain.to_dict()  # ordinary items keep their bytes
    d = {"id": "b", "path": "/s.tar", "ref": {"kind": "tar", "member": "k.flac", "offset": 512, "size": 9}}
    assert AudioItem.from_dict(d).to_dict()["ref"] == d["ref"]
    for bad, field in [({"kind": "zip"}, "ref.kind"), ({"kind": "tar", "member": "k.flac", "offset": 512}, "ref.size"),
                       ({"kind": "arrow", "row": -1, "column": "audio"}, "ref.row")]:
        with pytest.raises(InputError) as e:
            AudioItem.from_dict({"id": "c", "path": "/p", "ref": bad}, path="m.jsonl", line=3)
        assert e.value.field == field


def test_gz_lhotse_detection_is_not_fooled_by_audiocl_manifests(tmp_path):
    from audiocl.data.importers import detect_source

    m = tmp_path / "m.jsonl.gz"
    with gzip.open(m, "wt") as fh:
        fh.write(json.dumps({"id": "a", "path": "/x.wav", "sources": 1}) + "\n")
    assert detect_source(m) is None


def test_export_hf_and_prepare_it_back(corpora, tmp_path, capsys):
    import datasets

    src = tmp_path / "m.jsonl"
    items = _fsdd_manifest(corpora["clips"], src)
    rc, out, err = _run(capsys, "export", "hf", "--manifest", str(src), "--out", str(tmp_path / "hf"))
    assert rc == 0, err
    assert json.loads(out)["splits"] == {"train": N + 1}  # the segment has no split: train
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert list(ds) == ["train"] and len(ds["train"]) == N + 1
    assert isinstance(ds["train"].features["audio"], datasets.Audio)
    back = tmp_path / "back.jsonl"
    rc, _out, err = _run(capsys, "prepare", "hf", "--root", str(tmp_path / "hf"), "--out", str(back))
    assert rc == 0, err
    got = {it.id: it for it in load_manifest(back)}
    assert sorted(got) == sorted(it.id for it in items)
    for it in items:
        g = got[it.id]
        assert (g.texts, g.labels, g.speaker, g.language, g.custom.get("digit")) == (
            it.texts, it.labels, it.speaker, it.language, it.custom.get("digit"))
        assert g.ref["kind"] == "arrow"
        assert g.num_samples == (it.num_samples if it.id != "fsdd/segment" else 2000)
    from audiocl.data.sources import load_item

    seg_back, sr = load_item(got["fsdd/segment"])
    seg, sr0 = load_item(items[-1])
    assert sr == sr0 and np.array_equal(seg_back, seg)  # a segment is written as float WAV: exact


@pytest.mark.parametrize("source,module,extra", [("hf", "datasets", "hf"), ("lhotse", "lhotse", "lhotse")])
def test_missing_extra_is_one_line(corpora, tmp_path, capsys, monkeypatch, source, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    rc, _out, err = _run(capsys, "prepare", source, "--root", str(corpora[source]), "--out", str(tmp_path / "m.jsonl"))
    line = _one_line(err)
    assert rc == 2 and f"pip install 'audiocl[{extra}]'" in line and f"audiocl prepare {source}" in line


def test_webdataset_tars_need_no_library(corpora, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)
    rc, out, err = _run(capsys, "prepare", "webdataset", "--root", str(corpora["webdataset"]),
                        "--out", str(tmp_path / "m.jsonl"))
    assert rc == 0 and f"wrote {N} items" in out, err
