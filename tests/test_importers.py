"""Importers on the real ESC-50 sample and FSDD, and on corpora built in their published layouts."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from audiocl.cli import main as cli_main
from audiocl.data.importers import (
    IMPORTERS,
    ImportStats,
    importer_options,
    prepare,
    prepare_audiocaps,
    prepare_clotho,
    prepare_esc50,
    prepare_folder,
    prepare_fsdd,
    prepare_urbansound8k,
)
from audiocl.data.manifest import load_manifest, write_manifest
from audiocl.errors import AudioclError, InputError

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------ ESC-50 (real sample)


@pytest.fixture
def esc50_root(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "esc50-sample"
    if not root.is_dir():
        pytest.skip("esc50-sample absent")
    return root


def test_esc50_real_sample_matches_csv(esc50_root: Path) -> None:
    with open(esc50_root / "meta" / "esc50.csv", newline="") as fh:
        rows = {r["filename"]: r for r in csv.DictReader(fh)}
    items = list(prepare_esc50(esc50_root))
    assert len(items) == len(rows) == 14
    assert len({it.id for it in items}) == 14
    for it in items:
        fname = Path(it.path).name
        row = rows[fname]
        assert it.id == f"esc50/{Path(fname).stem}"
        assert it.labels == [row["category"]]
        assert it.custom["fold"] == int(row["fold"])
        assert it.custom["target"] == int(row["target"])
        assert it.custom["category"] == row["category"]
        assert it.custom["esc10"] == (row["esc10"] == "True")
        assert it.custom["src_file"] == row["src_file"] and it.custom["take"] == row["take"]
        # the file name itself encodes fold and target: {fold}-{src}-{take}-{target}.wav
        fold, _src, _take, target = Path(fname).stem.split("-")
        assert (int(fold), int(target)) == (it.custom["fold"], it.custom["target"])
        assert (it.sampling_rate, it.channels, it.duration) == (44100, 1, 5.0)
        assert it.num_samples == 220500
        assert it.split is None and it.source == "esc50" and it.license == "CC BY-NC 3.0"
        assert Path(it.path).is_absolute() and Path(it.path).is_file()
    assert {it.labels[0] for it in items} >= {"cow", "keyboard_typing", "crying_baby"}


def test_esc50_missing_audio_errors_with_csv_line_or_skips(esc50_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "ESC-50"
    shutil.copytree(esc50_root / "meta", root / "meta")
    (root / "audio").mkdir()
    lines = (root / "meta" / "esc50.csv").read_text().splitlines()
    gone_line = 5
    gone = lines[gone_line - 1].split(",")[0]
    for wav in (esc50_root / "audio").iterdir():
        if wav.name != gone:
            (root / "audio" / wav.name).symlink_to(wav)
    with pytest.raises(InputError) as err:
        list(prepare_esc50(root))
    assert err.value.line == gone_line and err.value.field == "filename"
    assert err.value.path == str(root / "meta" / "esc50.csv") and gone in str(err.value)
    stats = ImportStats()
    items = list(prepare_esc50(root, on_missing="skip", stats=stats))
    assert len(items) == 13 and stats.missing == 1 and gone in stats.missing_examples[0]


def test_esc50_bad_csv_names_line_and_field(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "esc"
    tiny_wav_factory(root / "audio" / "1-1-A-0.wav")
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    write_csv(root / "meta" / "esc50.csv", header, [["1-1-A-0.wav", "one", 0, "dog", "True", 1, "A"]])
    with pytest.raises(InputError) as err:
        list(prepare_esc50(root))
    assert (err.value.line, err.value.field) == (2, "fold")
    write_csv(root / "meta" / "esc50.csv", header[:3], [["1-1-A-0.wav", 1, 0]])
    with pytest.raises(InputError, match="missing column") as err:
        prepare_esc50(root)
    assert err.value.field == "category"
    with pytest.raises(AudioclError, match="not found"):
        prepare_esc50(tmp_path / "nowhere")


# ------------------------------------------------------------------ FSDD (real)


@pytest.fixture
def fsdd_root(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "fsdd-dev"
    if not root.is_dir():
        pytest.skip("fsdd-dev absent")
    return root


def test_fsdd_real_2000_files(fsdd_root: Path) -> None:
    items = list(prepare_fsdd(fsdd_root))
    assert len(items) == 2000
    labels = Counter(it.labels[0] for it in items)
    assert sorted(labels) == sorted(DIGITS) and set(labels.values()) == {200}
    speakers = Counter(it.speaker for it in items)
    assert sorted(speakers) == ["jackson", "nicolas", "theo", "yweweler"]
    assert set(speakers.values()) == {500}
    meta = json.loads((fsdd_root / "metadata.json").read_text())
    for it in items:
        digit, speaker, index = Path(it.path).stem.split("_")
        assert it.custom["digit"] == int(digit) and it.labels == [DIGITS[int(digit)]]
        assert it.texts == it.labels and it.speaker == speaker
        assert it.custom["index"] == int(index)
        assert it.custom["gender"] == meta[speaker]["gender"]
        assert it.custom["accent"] == meta[speaker]["accent"]
        assert it.sampling_rate == 8000 and it.channels == 1
        assert it.duration == pytest.approx(it.num_samples / 8000) and it.duration > 0
        assert it.split == ("test" if int(index) < 5 else "train")
        assert it.language == "en" and it.license == "CC BY-SA 4.0"
    # the README's split: indices 0-4 of each digit and speaker are the test set
    assert Counter(it.split for it in items) == {"test": 200, "train": 1800}
    assert len({it.id for it in items}) == 2000
    # the same folder given as recordings/ directly gives the same items
    assert [it.id for it in prepare_fsdd(fsdd_root / "recordings", probe=False)] == [
        it.id for it in items
    ]


def test_fsdd_no_probe_and_bad_name(tmp_path: Path, tiny_wav_factory) -> None:
    rec = tmp_path / "fsdd" / "recordings"
    tiny_wav_factory(rec / "7_alice_3.wav", sample_rate=8000)
    tiny_wav_factory(rec / "7_alice_10.wav", sample_rate=8000)
    (rec / ".hidden.wav").write_bytes(b"")
    items = list(prepare_fsdd(tmp_path / "fsdd", probe=False))
    assert [it.id for it in items] == ["fsdd/7_alice_3", "fsdd/7_alice_10"]  # numeric order
    assert items[0].duration is None and items[0].sampling_rate is None
    assert items[0].custom == {"digit": 7, "index": 3}  # no metadata.json here
    tiny_wav_factory(rec / "seven.wav")
    with pytest.raises(InputError, match="does not match") as err:
        prepare_fsdd(tmp_path / "fsdd")
    assert err.value.path.endswith("seven.wav")


# ------------------------------------------------------------------ UrbanSound8K (published layout)


US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


def make_us8k(parent: Path, factory) -> list[list]:
    rows = [
        ["100032-3-0-0.wav", 100032, 0.0, 0.317551, 1, 5, 3, "dog_bark"],
        ["100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 5, 2, "children_playing"],
        ["101415-3-0-2.wav", 101415, 1.0, 5.0, 2, 1, 3, "dog_bark"],
        ["7061-6-0-0.wav", 7061, 0.0, 1.5, 2, 10, 6, "gun_shot"],
    ]
    base = parent / "UrbanSound8K"
    for i, r in enumerate(rows):
        factory(base / "audio" / f"fold{r[5]}" / r[0], seconds=0.2, sample_rate=22050,
                channels=1 + i % 2, seed=i)
    write_csv(base / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)
    return rows


def test_urbansound8k_layout_and_roots(tmp_path: Path, tiny_wav_factory) -> None:
    rows = make_us8k(tmp_path / "data", tiny_wav_factory)
    a = list(prepare_urbansound8k(tmp_path / "data"))
    b = list(prepare_urbansound8k(tmp_path / "data" / "UrbanSound8K"))
    assert a == b and len(a) == 4
    for it, r in zip(a, rows):
        assert it.id == f"urbansound8k/{Path(r[0]).stem}"
        assert it.labels == [r[7]]
        assert Path(it.path) == tmp_path / "data" / "UrbanSound8K" / "audio" / f"fold{r[5]}" / r[0]
        assert it.custom == {
            "fold": r[5], "fsID": r[1], "slice_start": r[2], "slice_end": r[3],
            "salience": r[4], "classID": r[6], "class": r[7],
        }
        assert it.start == 0.0 and it.sampling_rate == 22050 and it.num_samples == 4410
        assert it.license == "CC BY-NC 3.0"
    assert [it.channels for it in a] == [1, 2, 1, 2]


def test_urbansound8k_missing_and_bad_fold(tmp_path: Path, tiny_wav_factory) -> None:
    make_us8k(tmp_path, tiny_wav_factory)
    (tmp_path / "UrbanSound8K" / "audio" / "fold1" / "101415-3-0-2.wav").unlink()
    with pytest.raises(InputError) as err:
        list(prepare_urbansound8k(tmp_path))
    assert (err.value.line, err.value.field) == (4, "slice_file_name")
    stats = ImportStats()
    assert len(list(prepare_urbansound8k(tmp_path, on_missing="skip", stats=stats))) == 3
    assert stats.missing == 1
    write_csv(tmp_path / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv", US8K_HEADER,
              [["7061-6-0-0.wav", 7061, 0.0, 1.5, 2, 11, 6, "gun_shot"]])
    with pytest.raises(InputError, match="fold must be") as err:
        list(prepare_urbansound8k(tmp_path))
    assert (err.value.line, err.value.field) == (2, "fold")
    with pytest.raises(AudioclError, match="UrbanSound8K.csv not found"):
        prepare_urbansound8k(tmp_path / "UrbanSound8K" / "audio")


# ------------------------------------------------------------------ AudioCaps (CSVs)


AC_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def make_audiocaps(root: Path) -> None:
    write_csv(root / "train.csv", AC_HEADER, [
        [91139, "r1nicOVtvkQ", 130, "A woman talks nearby as water pours"],
        [58146, "UDGBjjwyaqE", 20, 'Multiple clanging and clanking sounds, "loud"'],
        [11542, "MissingClip0", 30, "A car engine revs"],
    ])
    val = []
    for k, (ytid, start) in enumerate([("rqfQRErjfk8", 170), ("rqu8iB22I_Y", 5)]):
        for j in range(5):
            val.append([97000 + 10 * k + j, ytid, start, f"caption {j} of clip {k}, with a comma"])
    write_csv(root / "val.csv", AC_HEADER, val)
    write_csv(root / "test.csv", AC_HEADER, [[103549, "--0w1YA1Hm4", 30, "A vehicle moves"]] * 1)


def test_audiocaps_grouping_splits_and_missing(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "audiocaps"
    make_audiocaps(root)
    for split, ytid in [("train", "r1nicOVtvkQ"), ("train", "UDGBjjwyaqE"),
                        ("val", "rqfQRErjfk8"), ("val", "rqu8iB22I_Y"), ("test", "--0w1YA1Hm4")]:
        tiny_wav_factory(root / split / f"{ytid}.wav", seconds=0.3, sample_rate=32000)
    stats = ImportStats()
    items = list(prepare_audiocaps(root, stats=stats))
    assert [it.id for it in items] == [
        "audiocaps/train/r1nicOVtvkQ_130", "audiocaps/train/UDGBjjwyaqE_20",
        "audiocaps/val/rqfQRErjfk8_170", "audiocaps/val/rqu8iB22I_Y_5",
        "audiocaps/test/--0w1YA1Hm4_30",
    ]
    assert stats.missing == 1 and "MissingClip0" in stats.missing_examples[0]
    assert [len(it.texts) for it in items] == [1, 1, 5, 5, 1]
    assert items[1].texts == ['Multiple clanging and clanking sounds, "loud"']
    assert items[2].texts[3] == "caption 3 of clip 0, with a comma"
    assert items[2].custom == {
        "youtube_id": "rqfQRErjfk8", "youtube_start_time": 170,
        "audiocap_ids": [97000, 97001, 97002, 97003, 97004],
    }
    assert [it.split for it in items] == ["train", "train", "val", "val", "test"]
    assert items[0].start == 0.0 and items[0].sampling_rate == 32000
    assert items[0].license == "AudioSet/YouTube; CC BY 4.0 annotations"
    assert [it.id for it in prepare_audiocaps(root, splits="val,test", probe=False)][0] == (
        "audiocaps/val/rqfQRErjfk8_170"
    )
    with pytest.raises(InputError, match="audio file not found") as err:
        list(prepare_audiocaps(root, on_missing="error"))
    assert (err.value.line, err.value.field) == (4, "youtube_id")
    with pytest.raises(AudioclError, match="unknown split"):
        prepare_audiocaps(root, splits=["dev"])


def test_audiocaps_custom_pattern_and_audio_dir(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "csvs" / "dataset"
    make_audiocaps(root)
    audio = tmp_path / "wavs"
    tiny_wav_factory(audio / "91139.flac", seconds=0.1)
    tiny_wav_factory(audio / "97013.flac", seconds=0.1)  # the 4th caption id of val clip 2
    items = list(prepare_audiocaps(tmp_path / "csvs", audio_dir=audio,
                                   filename_pattern="{audiocap_id}.flac"))
    assert [Path(it.path).name for it in items] == ["91139.flac", "97013.flac"]
    with pytest.raises(AudioclError, match="placeholders"):
        prepare_audiocaps(root, filename_pattern="{ytid}.wav")


# ------------------------------------------------------------------ Clotho v2.1


CLOTHO_HEADER = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]


def test_clotho_layout_metadata_and_missing(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "clotho"
    dev_rows = [
        ["Distorted AM Radio noise.wav"] + [f"radio noise, caption {i}" for i in range(5)],
        ["birds at dawn 2.wav"] + [f"birds sing {i}" for i in range(4)] + [""],
    ]
    write_csv(root / "clotho_captions_development.csv", CLOTHO_HEADER, dev_rows)
    write_csv(root / "clotho_captions_evaluation.csv", CLOTHO_HEADER,
              [["rain.wav"] + [f"rain {i}" for i in range(5)]])
    with open(root / "clotho_metadata_development.csv", "w", encoding="latin-1", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "keywords", "sound_id", "sound_link", "start_end_samples",
                    "manufacturer", "license"])
        w.writerow(["Distorted AM Radio noise.wav", "radio;noise;am", "34164",
                    "https://freesound.org/people/x/sounds/34164", "[0, 100]", "Ré",
                    "http://creativecommons.org/licenses/by/3.0/"])
    tiny_wav_factory(root / "development" / "Distorted AM Radio noise.wav", seconds=0.2, sample_rate=44100)
    tiny_wav_factory(root / "development" / "birds at dawn 2.wav", seconds=0.2, sample_rate=44100)
    tiny_wav_factory(root / "evaluation" / "rain.wav", seconds=0.2, sample_rate=44100)
    items = list(prepare_clotho(root))
    assert [it.id for it in items] == [
        "clotho/development/Distorted AM Radio noise", "clotho/development/birds at dawn 2",
        "clotho/evaluation/rain",
    ]
    assert items[0].texts == [f"radio noise, caption {i}" for i in range(5)]
    assert len(items[1].texts) == 4  # the empty cell is dropped
    assert items[0].license == "http://creativecommons.org/licenses/by/3.0/"
    assert items[0].custom["keywords"] == ["radio", "noise", "am"]
    assert items[0].custom["manufacturer"] == "Ré"  # Latin-1 metadata decoded
    assert items[1].license == "Freesound licences per clip (see dataset)"
    assert [it.split for it in items] == ["development", "development", "evaluation"]
    assert [it.id for it in prepare_clotho(root, splits="evaluation")] == ["clotho/evaluation/rain"]
    (root / "evaluation" / "rain.wav").unlink()
    with pytest.raises(InputError) as err:
        list(prepare_clotho(root))
    assert err.value.line == 2 and err.value.path.endswith("clotho_captions_evaluation.csv")
    stats = ImportStats()
    assert len(list(prepare_clotho(root, on_missing="skip", stats=stats))) == 2
    assert stats.missing == 1
    with pytest.raises(AudioclError, match="clotho_captions_validation.csv not found"):
        prepare_clotho(root, splits=["validation"])


# ------------------------------------------------------------------ folder


def test_folder_labels_from_subfolders(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "sounds"
    tiny_wav_factory(root / "dog" / "a.wav")
    tiny_wav_factory(root / "dog" / "deep" / "b.flac")
    tiny_wav_factory(root / "cat" / "c.ogg", sample_rate=22050)
    tiny_wav_factory(root / "cat" / "d.mp3", sample_rate=22050)
    tiny_wav_factory(root / "cat" / "d.wav")  # same stem as d.mp3
    tiny_wav_factory(root / "loose.wav")
    tiny_wav_factory(root / ".trash" / "x.wav")
    (root / "dog" / "notes.txt").write_text("not audio")
    (root / "cat" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (root / "dog" / "loop").symlink_to(root / "dog")  # a cycle must not hang the walk
    stats = ImportStats()
    items = list(prepare_folder(root, license="CC0", stats=stats))
    by_rel = {it.custom["relpath"]: it for it in items}
    assert sorted(by_rel) == [
        "cat/broken.wav", "cat/c.ogg", "cat/d.mp3", "cat/d.wav", "dog/a.wav", "dog/deep/b.flac",
        "loose.wav",
    ]
    assert by_rel["dog/deep/b.flac"].labels == ["dog"] and by_rel["cat/c.ogg"].labels == ["cat"]
    assert by_rel["loose.wav"].labels == []
    assert by_rel["dog/a.wav"].id == "folder/dog/a"
    assert by_rel["cat/d.mp3"].id == "folder/cat/d.mp3" and by_rel["cat/d.wav"].id == "folder/cat/d.wav"
    assert by_rel["cat/c.ogg"].sampling_rate == 22050 and by_rel["cat/c.ogg"].duration > 0
    # an unreadable file is listed without header facts, so extraction reports its reason
    assert by_rel["cat/broken.wav"].duration is None and stats.unprobed == 1
    assert all(it.license == "CC0" and it.source == "folder" for it in items)
    assert any("no label folder" in n for n in stats.notes)
    only = list(prepare_folder(root, extensions="flac", name="mine"))
    assert [it.id for it in only] == ["mine/dog/deep/b"]


def test_folder_captions_csv_and_json(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "caps"
    tiny_wav_factory(root / "a.wav")
    tiny_wav_factory(root / "sub" / "b.wav")
    tiny_wav_factory(root / "c.wav")
    write_csv(root / "captions.csv", ["file", "caption"], [
        ["a.wav", "a tone"], ["sub/b.wav", "another tone"], ["a.wav", "a steady beep, loud"],
    ])
    stats = ImportStats()
    items = {it.custom["relpath"]: it for it in prepare_folder(root, stats=stats)}
    assert items["a.wav"].texts == ["a tone", "a steady beep, loud"]
    assert items["sub/b.wav"].texts == ["another tone"] and items["sub/b.wav"].labels == []
    assert items["c.wav"].texts == [] and any("no caption" in n for n in stats.notes)
    forced = {it.custom["relpath"]: it for it in prepare_folder(root, labels_from="dirs")}
    assert forced["sub/b.wav"].labels == ["sub"]

    (root / "captions.csv").unlink()
    (root / "captions.json").write_text(json.dumps({"a.wav": "one", "sub/b.wav": ["two", "three"]}))
    items = {it.custom["relpath"]: it for it in prepare_folder(root)}
    assert items["a.wav"].texts == ["one"] and items["sub/b.wav"].texts == ["two", "three"]

    (root / "captions.json").write_text(json.dumps({"a.wav": "one", "gone.wav": "x"}))
    with pytest.raises(InputError, match="not found") as err:
        prepare_folder(root)
    assert err.value.field == "gone.wav"
    assert len(list(prepare_folder(root, on_missing="skip"))) == 3
    (root / "captions.json").write_text(json.dumps({"../escape.wav": "x"}))
    with pytest.raises(InputError, match="relative"):
        prepare_folder(root)


# ------------------------------------------------------------------ registry and CLI


def test_registry_and_unknown_options(tmp_path: Path) -> None:
    assert sorted(IMPORTERS) == ["audiocaps", "clotho", "esc50", "folder", "fsdd", "hf", "lhotse",
                                 "urbansound8k", "webdataset"]
    assert "filename_pattern" in importer_options("audiocaps")
    with pytest.raises(AudioclError, match="known: audiocaps, clotho, esc50, folder, fsdd, hf, lhotse, urbansound8k, webdataset"):
        prepare("esc-50", tmp_path)
    with pytest.raises(AudioclError, match="captions"):
        prepare("esc50", tmp_path, captions="x.csv")


def test_cli_prepare_writes_manifest_and_summary(
    tmp_path: Path, tiny_wav_factory, esc50_root: Path, capsys
) -> None:
    out = tmp_path / "esc50.jsonl.gz"
    assert cli_main(["prepare", "esc50", "--root", str(esc50_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 14 items to {out}" in printed
    items = load_manifest(out)
    assert len(items) == 14 and items[0].custom["fold"] == 2

    root = tmp_path / "ac"
    make_audiocaps(root)
    tiny_wav_factory(root / "val" / "rqfQRErjfk8.wav", seconds=0.1)
    out = tmp_path / "ac.jsonl"
    assert cli_main(["prepare", "audiocaps", "--root", str(root), "--out", str(out), "--no-probe"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 items" in printed and "missing audio: 5 skipped" in printed
    assert load_manifest(out)[0].duration is None


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["prepare", "esc5O", "--root", "{tmp}", "--out", "{tmp}/m.jsonl"], "known: audiocaps"),
        (["prepare", "esc50", "--root", "{tmp}/none", "--out", "{tmp}/m.jsonl"], "root not found"),
        (["prepare", "folder", "--root", "{tmp}", "--out", "{tmp}/m.jsonl"], "no sound files"),
        (["prepare", "fsdd", "--root", "{tmp}", "--out", "{tmp}/m.jsonl", "--splits", "a"], "splits"),
    ],
)
def test_cli_prepare_user_mistakes_one_line(tmp_path: Path, capsys, argv: list[str], fragment: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert fragment in err and err.strip().count("\n") == 0
    assert not (tmp_path / "m.jsonl").exists()


def test_prepared_manifest_round_trips_relative(tmp_path: Path, tiny_wav_factory) -> None:
    root = tmp_path / "corpus"
    tiny_wav_factory(root / "x" / "a.wav")
    out = tmp_path / "m.jsonl"
    assert cli_main(["prepare", "folder", "--root", str(root), "--out", str(out),
                     "--relative-paths"]) == 0
    assert json.loads(out.read_text())["path"] == "corpus/x/a.wav"
    (item,) = load_manifest(out)
    assert item.path == str(root / "x" / "a.wav")
    write_manifest([item], tmp_path / "again.jsonl")


def test_prepare_manifest_error_mid_import_leaves_no_file(esc50_root: Path, tmp_path: Path) -> None:
    from audiocl.data.importers import prepare_manifest

    root = tmp_path / "ESC-50"
    shutil.copytree(esc50_root / "meta", root / "meta")
    (root / "audio").mkdir()
    wavs = sorted((esc50_root / "audio").iterdir())
    for wav in wavs[:-1]:  # the last one listed in the CSV is still missing
        (root / "audio" / wav.name).symlink_to(wav)
    out = tmp_path / "new" / "sub" / "esc50.jsonl"
    with pytest.raises(InputError, match="audio file not found"):
        prepare_manifest("esc50", root, out)
    assert list(out.parent.iterdir()) == []
    stats = prepare_manifest("esc50", root, out, on_missing="skip")
    assert stats.items == 13 and len(load_manifest(out)) == 13
