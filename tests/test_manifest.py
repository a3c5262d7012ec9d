"""Manifest schema, lazy reading, validation errors and atomic writing."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocl.cli import main as cli_main
from audiocl.data.manifest import (
    AudioItem,
    ManifestWriter,
    count_manifest,
    load_manifest,
    read_manifest,
    summarize_manifest,
    write_manifest,
)
from audiocl.errors import AudioclError, InputError


def full_item(i: int = 0, path: str = "/data/a.wav") -> AudioItem:
    return AudioItem(
        id=f"ds/{i}",
        path=path,
        start=1.5,
        duration=2.25,
        sampling_rate=16000,
        num_samples=64000,
        channels=2,
        texts=["a dog barks", "ein Hund bellt ü"],
        labels=["dog", "animal"],
        split="train",
        language="en",
        speaker="spk1",
        source="ds",
        license="CC BY 4.0",
        custom={"fold": 3, "category": "dog", "image": "img/1.png", "nested": {"a": [1, 2]}},
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_round_trip_jsonl_and_gz(tmp_path: Path) -> None:
    items = [full_item(i, f"/data/{i}.wav") for i in range(5)]
    for name in ("m.jsonl", "m.jsonl.gz"):
        out = tmp_path / name
        assert write_manifest(items, out) == 5
        assert load_manifest(out) == items
    # custom fields are written at the top level, next to the core fields
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["fold"] == 3 and first["image"] == "img/1.png" and "custom" not in first
    assert first["id"] == "ds/0" and first["texts"] == ["a dog barks", "ein Hund bellt ü"]
    with gzip.open(tmp_path / "m.jsonl.gz", "rt", encoding="utf-8") as fh:
        assert json.loads(fh.readline()) == first
    assert count_manifest(tmp_path / "m.jsonl.gz") == 5


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    items = [full_item(i) for i in range(3)]
    write_manifest(items, tmp_path / "a.jsonl.gz")
    write_manifest(items, tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_gzip_detected_by_content_not_suffix(tmp_path: Path) -> None:
    write_manifest([full_item()], tmp_path / "m.jsonl.gz")
    os.rename(tmp_path / "m.jsonl.gz", tmp_path / "renamed.jsonl")
    assert load_manifest(tmp_path / "renamed.jsonl") == [full_item()]


def test_unknown_fields_and_lhotse_custom_round_trip(tmp_path: Path) -> None:
    m = write_lines(
        tmp_path / "m.jsonl",
        [
            json.dumps({"id": "a", "path": "/x.wav", "video": "v.mp4", "custom": {"fold": 2}}),
            json.dumps({"id": "b", "path": "/y.wav", "start": None}),
        ],
    )
    a, b = load_manifest(m)
    assert a.custom == {"video": "v.mp4", "fold": 2}
    assert b.start == 0.0 and b.texts == [] and b.labels == [] and b.duration is None
    d = a.to_dict()
    assert d["video"] == "v.mp4" and d["fold"] == 2
    assert AudioItem.from_dict(d) == a
    assert a.get("fold") == 2 and a.get("id") == "a" and a.get("nothing", 5) == 5


def test_relative_paths_resolve_against_manifest_folder(tmp_path: Path) -> None:
    sub = tmp_path / "manifests"
    sub.mkdir()
    m = write_lines(
        sub / "m.jsonl",
        [
            json.dumps({"id": "a", "path": "audio/x.wav"}),
            json.dumps({"id": "b", "path": "../y.flac"}),
            json.dumps({"id": "c", "path": "/abs/z.wav"}),
            json.dumps({"id": "d", "path": "s3://bucket/k.wav"}),
        ],
    )
    paths = [it.path for it in read_manifest(m)]
    assert paths == [
        str(sub / "audio" / "x.wav"),
        str(tmp_path / "y.flac"),
        "/abs/z.wav",
        "s3://bucket/k.wav",
    ]
    assert [it.path for it in read_manifest(m, resolve_paths=False)][:2] == [
        "audio/x.wav",
        "../y.flac",
    ]
    # and the writer can make them relative again, so a folder of data + manifest can move
    out = sub / "again.jsonl"
    write_manifest(read_manifest(m), out, relative_to_manifest=True)
    written = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert written == ["audio/x.wav", str(tmp_path / "y.flac"), "/abs/z.wav", "s3://bucket/k.wav"]


def test_read_is_lazy_on_large_truncated_gzip(tmp_path: Path) -> None:
    """The first item comes out of a gzip file whose end is corrupt: nothing past it was read."""
    line = json.dumps(full_item().to_dict() | {"id": "X"})
    m = tmp_path / "big.jsonl.gz"
    with gzip.open(m, "wt", encoding="utf-8", compresslevel=1) as fh:
        for i in range(60_000):
            fh.write(line.replace('"X"', f'"id{i}"') + "\n")
    data = m.read_bytes()
    m.write_bytes(data[: len(data) // 2])  # cut the stream: a full read must fail
    it = read_manifest(m)
    first = next(it)
    assert first.id == "id0"
    assert next(it).id == "id1"
    with pytest.raises(InputError, match="cannot read") as err:
        for _ in it:
            pass
    assert err.value.line is not None and err.value.line > 1000


def test_read_is_lazy_bad_line_only_raises_when_reached(tmp_path: Path) -> None:
    m = write_lines(tmp_path / "m.jsonl", [json.dumps({"id": "a", "path": "/a.wav"}), "{oops"])
    it = read_manifest(m)
    assert next(it).id == "a"
    with pytest.raises(InputError) as err:
        next(it)
    assert err.value.line == 2 and err.value.field is None
    assert "invalid JSON" in str(err.value) and str(m) in str(err.value)


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"path": "/a.wav"}, "id", "missing"),
        ({"id": "a"}, "path", "missing"),
        ({"id": "", "path": "/a.wav"}, "id", "empty"),
        ({"id": 7, "path": "/a.wav"}, "id", "expected a string"),
        ({"id": "a", "path": "/a.wav", "duration": -1.0}, "duration", ">= 0"),
        ({"id": "a", "path": "/a.wav", "duration": "5"}, "duration", "expected a number"),
        ({"id": "a", "path": "/a.wav", "duration": True}, "duration", "expected a number"),
        ({"id": "a", "path": "/a.wav", "start": -0.5}, "start", ">= 0"),
        ({"id": "a", "path": "/a.wav", "sampling_rate": "16000"}, "sampling_rate", "integer"),
        ({"id": "a", "path": "/a.wav", "sampling_rate": 0}, "sampling_rate", ">= 1"),
        ({"id": "a", "path": "/a.wav", "sampling_rate": 16000.5}, "sampling_rate", "integer"),
        ({"id": "a", "path": "/a.wav", "num_samples": -3}, "num_samples", ">= 0"),
        ({"id": "a", "path": "/a.wav", "channels": 0}, "channels", ">= 1"),
        ({"id": "a", "path": "/a.wav", "texts": "a dog"}, "texts", "list of strings"),
        ({"id": "a", "path": "/a.wav", "texts": ["ok", 3]}, "texts[1]", "expected a string"),
        ({"id": "a", "path": "/a.wav", "labels": {"dog": 1}}, "labels", "list of strings"),
        ({"id": "a", "path": "/a.wav", "split": 1}, "split", "expected a string"),
        ({"id": "a", "path": "/a.wav", "sampling_rate": 100, "num_samples": 500, "start": 4.0,
          "duration": 1.5}, "duration", "past the file's end"),
        ({"id": "a", "path": "/a.wav", "sampling_rate": 100, "num_samples": 500, "start": 6.0},
         "start", "past the file's end"),
        ({"id": "a", "path": "/a.wav", "custom": [1]}, "custom", "object"),
        ({"id": "a", "path": "/a.wav", "fold": 1, "custom": {"fold": 2}}, "fold", "both"),
    ],
)
def test_bad_line_names_file_line_and_field(
    tmp_path: Path, record: dict, field: str, fragment: str
) -> None:
    m = write_lines(
        tmp_path / "m.jsonl",
        [json.dumps({"id": "ok", "path": "/ok.wav"}), "", json.dumps(record)],
    )
    with pytest.raises(InputError) as err:
        load_manifest(m)
    e = err.value
    assert (e.path, e.line, e.field) == (str(m), 3, field)  # blank line 2 still counts
    assert fragment in str(e)
    assert str(e).startswith(f"{m}:3: field '{field}'")


def test_segment_within_file_is_accepted() -> None:
    d = {"id": "a", "path": "/a.wav", "sampling_rate": 100, "num_samples": 500}
    assert AudioItem.from_dict(d | {"start": 4.0, "duration": 1.0}).end == 5.0
    assert AudioItem.from_dict(d | {"start": 4.0, "duration": 1.04}).duration == 1.04  # tolerance


def test_integral_float_sampling_rate_is_accepted(tmp_path: Path) -> None:
    m = write_lines(
        tmp_path / "m.jsonl", [json.dumps({"id": "a", "path": "/a.wav", "sampling_rate": 16000.0})]
    )
    (item,) = load_manifest(m)
    assert item.sampling_rate == 16000 and isinstance(item.sampling_rate, int)


def test_non_object_line_and_duplicate_ids(tmp_path: Path) -> None:
    m = write_lines(tmp_path / "a.jsonl", ['["id", "path"]'])
    with pytest.raises(InputError, match="expected a JSON object") as err:
        load_manifest(m)
    assert err.value.line == 1
    rec = json.dumps({"id": "same", "path": "/a.wav"})
    m = write_lines(tmp_path / "b.jsonl", [rec, json.dumps({"id": "other", "path": "/b.wav"}), rec])
    with pytest.raises(InputError, match="first on line 1") as err:
        load_manifest(m)
    assert (err.value.line, err.value.field) == (3, "id")
    assert len(load_manifest(m, check_duplicates=False)) == 3


def test_missing_manifest_names_the_path_at_call_time(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(AudioclError, match="nope.jsonl"):
        read_manifest(missing)  # not only when the first item is pulled
    with pytest.raises(AudioclError, match="directory"):
        read_manifest(tmp_path)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'{"id": "a", "path": "/a.wav"}\n{"id": "\xff\xfe", "path": "/b.wav"}\n')
    with pytest.raises(InputError, match="UTF-8") as err:
        load_manifest(m)
    assert err.value.line == 2


def _dir_listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_atomic_write_leaves_nothing_on_invalid_item(tmp_path: Path, name: str) -> None:
    items = [full_item(0), full_item(1), AudioItem(id="bad", path="/x.wav", duration=-2.0)]
    with pytest.raises(InputError) as err:
        write_manifest(items, tmp_path / name)
    assert (err.value.line, err.value.field) == (3, "duration")
    assert _dir_listing(tmp_path) == []  # neither the manifest nor a temporary file


def test_atomic_write_keeps_existing_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    write_manifest([full_item(0)], out)
    before = out.read_bytes()

    def items():
        yield full_item(1)
        raise RuntimeError("importer crashed")

    with pytest.raises(RuntimeError, match="importer crashed"):
        write_manifest(items(), out)
    assert out.read_bytes() == before
    assert _dir_listing(tmp_path) == ["m.jsonl"]
    # duplicate ids and values JSON cannot hold are refused too, leaving the old file
    with pytest.raises(InputError, match="duplicate id"):
        write_manifest([full_item(1), full_item(1)], out)
    with pytest.raises(InputError, match="JSON"):
        write_manifest([AudioItem(id="n", path="/a.wav", custom={"score": float("nan")})], out)
    with pytest.raises(InputError, match="core field"):
        write_manifest([AudioItem(id="n", path="/a.wav", custom={"labels": ["x"]})], out)
    assert out.read_bytes() == before
    assert _dir_listing(tmp_path) == ["m.jsonl"]


def test_streaming_writer_replaces_only_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    with ManifestWriter(out) as w:
        w.write(full_item(0))
        assert not out.exists()  # still under a temporary name
        w.write(full_item(1))
    assert w.count == 2 and len(load_manifest(out)) == 2
    with pytest.raises(AudioclError, match="output folder does not exist"):
        write_manifest([full_item()], tmp_path / "no" / "m.jsonl")


def test_summary_counts(tmp_path: Path) -> None:
    items = [
        AudioItem(id="a", path="/a.wav", duration=1.0, sampling_rate=16000, channels=1,
                  labels=["dog"], texts=["x"], split="train"),
        AudioItem(id="b", path="/b.wav", duration=3.0, sampling_rate=44100, channels=2,
                  labels=["dog", "cat"], split="test"),
        AudioItem(id="c", path="/c.wav", num_samples=8000, sampling_rate=16000),
        AudioItem(id="d", path="/d.wav"),
    ]
    write_manifest(items, tmp_path / "m.jsonl")
    s = summarize_manifest(tmp_path / "m.jsonl", top=1)
    assert s["items"] == 4
    assert s["duration"]["total_s"] == pytest.approx(4.5)
    assert s["duration"]["min_s"] == pytest.approx(0.5) and s["duration"]["max_s"] == 3.0
    assert s["duration"]["unknown"] == 1
    assert s["sampling_rate"] == {"16000": 2, "44100": 1, "unknown": 1}
    assert s["channels"] == {"1": 1, "2": 1, "unknown": 2}
    assert s["labels"] == {"distinct": 2, "total": 3, "top": {"dog": 2}}
    assert s["splits"] == {"none": 2, "test": 1, "train": 1}
    assert s["texts"]["per_item"] == {"0": 3, "1": 1}


def test_cli_bad_manifest_gives_one_line_exit_2(tmp_path: Path, capsys) -> None:
    m = write_lines(
        tmp_path / "m.jsonl",
        [json.dumps({"id": "a", "path": "/a.wav"}), json.dumps({"id": "b", "path": "/b.wav", "texts": "t"})],
    )
    assert cli_main(["info", str(m)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().count("\n") == 0
    assert f"{m}:2: field 'texts'" in err


def test_cli_prepare_with_bad_sidecar_writes_nothing(tmp_path: Path, tiny_wav_factory) -> None:
    """A real subprocess: one line on stderr, no traceback, exit 2, no output file."""
    data = tmp_path / "corpus"
    tiny_wav_factory(data / "a.wav")
    tiny_wav_factory(data / "b.wav")
    (data / "captions.json").write_text(json.dumps({"a.wav": "a tone", "b.wav": 5}))
    out = tmp_path / "out" / "m.jsonl"
    out.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "audiocl.cli", "prepare", "folder", "--root", str(data),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "captions.json" in proc.stderr and "field 'b.wav'" in proc.stderr
    assert os.listdir(out.parent) == []


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_json_scalar = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text | st.floats(
    allow_nan=False, allow_infinity=False
)
_custom_key = _text.filter(lambda k: k not in AudioItem.__dataclass_fields__ and k != "custom")


@settings(max_examples=60, deadline=None)
@given(
    ident=_text.filter(bool),
    start=st.floats(0, 1e6),
    duration=st.none() | st.floats(0, 1e6),
    sr=st.none() | st.integers(1, 400_000),
    texts=st.lists(_text, max_size=4),
    labels=st.lists(_text, max_size=4),
    speaker=st.none() | _text,
    custom=st.dictionaries(_custom_key, _json_scalar | st.lists(_json_scalar, max_size=3), max_size=4),
)
def test_property_dict_json_round_trip(ident, start, duration, sr, texts, labels, speaker, custom):
    item = AudioItem(
        id=ident, path="/p.wav", start=start, duration=duration, sampling_rate=sr,
        texts=texts, labels=labels, speaker=speaker, custom=custom,
    )
    back = AudioItem.from_dict(json.loads(json.dumps(item.to_dict(), allow_nan=False)))
    assert back == item
