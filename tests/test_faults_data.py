"""Faults and bad input in the data path (issue 14): damaged stores, resume from
another manifest, bad audio files, damaged manifests, export keys, disk full.

Every case asserts the documented outcome (exit 2 and ONE line naming the file /
line / field / shard, or the reason recorded in errors.jsonl), and that nothing was
lost or silently changed (hash of every file of the store or folder, before and
after). Stores are tiny: six real FSDD recordings, shards of two, extracted in
process (``runner="inline"`` runs the same shard code as the Ray actors); the Ray
paths are in tests/test_extract.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocl.audio.frontend import get_preset
from audiocl.cli import main as cli_main
from audiocl.data.extract import extract
from audiocl.data.store import FeatureStore, content_hash
from audiocl.errors import AudioclError

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)


def tree_hash(folder: Path) -> str:
    """sha256 over every file's relative name and bytes: any change shows."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def fsdd_rows(tmp_path_factory) -> list[dict]:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd-dev" / "recordings"
    files = sorted(root.glob("*.wav"))[:6]
    if len(files) < 6:
        pytest.skip("shared fsdd-dev recordings absent")
    return [{"id": f"fsdd/{p.stem}", "path": str(p), "labels": [p.stem[0]]} for p in files]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, fsdd_rows) -> Path:
    """A finished store: 6 items, 3 shards of 2 (speech16k log-mel, 80 mels)."""
    d = tmp_path_factory.mktemp("base")
    manifest = write_rows(d / "m.jsonl", fsdd_rows)
    extract(manifest, d / "store", get_preset("speech16k"), shard_size=2, runner="inline",
            progress=False)
    return d / "store"


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(base_store, out)
    return out


def _marker(store: Path, shard: int) -> dict:
    return json.loads((store / "shards" / f"shard-{shard:06d}.done").read_text())


def _set_marker_size(store: Path, shard: int, name: str) -> None:
    """Record the file's current size in its marker, so that the check under test
    is the header one, not the size one."""
    path = store / "shards" / f"shard-{shard:06d}.done"
    m = json.loads(path.read_text())
    m["files"][name]["size"] = (store / "shards" / name).stat().st_size
    path.write_text(json.dumps(m))


# ----------------------------------------------------------------- 1, 4: damaged stores


def test_intact_store_opens_and_verifies(store: Path, capsys) -> None:
    before = tree_hash(store)
    rc, out, _ = run_cli(capsys, "info", str(store), "--json")
    assert rc == 0
    assert json.loads(out)["integrity"]["ok"] is True
    rc, out, _ = run_cli(capsys, "info", str(store), "--verify", "--json")
    assert rc == 0
    integrity = json.loads(out)["integrity"]
    assert integrity["checked"] == "sha256 of every file" and integrity["files"] == 12
    assert tree_hash(store) == before


def _damage_truncate(store: Path) -> str:
    p = store / "shards" / "shard-000001.npy"
    p.write_bytes(p.read_bytes()[:-100])
    return "shard-000001.npy"


def _damage_bad_magic(store: Path) -> str:
    p = store / "shards" / "shard-000001.npy"
    data = bytearray(p.read_bytes())
    data[:6] = b"NOTNPY"
    p.write_bytes(bytes(data))
    return "shard-000001.npy"


def _damage_delete(store: Path) -> str:
    (store / "shards" / "shard-000002.npy").unlink()
    return "shard-000002.npy"


def _damage_float64(store: Path) -> str:
    p = store / "shards" / "shard-000000.npy"
    np.save(p, np.load(p).astype(np.float64))
    _set_marker_size(store, 0, "shard-000000.npy")
    return "shard-000000.npy"


def _damage_header_shape(store: Path) -> str:
    p = store / "shards" / "shard-000000.npy"
    x = np.load(p)
    np.save(p, x.reshape(-1, 40))  # same bytes, other shape: n_mels would be wrong
    _set_marker_size(store, 0, "shard-000000.npy")
    return "shard-000000.npy"


def _damage_delete_marker(store: Path) -> str:
    (store / "shards" / "shard-000001.done").unlink()
    return "shard-000001.done"


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_bad_magic, _damage_delete,
                                    _damage_float64, _damage_header_shape,
                                    _damage_delete_marker])
def test_damaged_shard_file_named_in_one_line(store: Path, damage, capsys) -> None:
    name = damage(store)
    before = tree_hash(store)
    rc, _, err = run_cli(capsys, "info", str(store))
    assert rc == 2
    one_line_error(err, "audiocl info: error:", name)
    # the loader, training and evaluation open stores the same way
    with pytest.raises(AudioclError, match=name):
        FeatureStore(store)
    assert tree_hash(store) == before


def test_pickled_shard_is_never_unpickled(store: Path, tmp_path: Path, capsys) -> None:
    witness = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(witness),))

    p = store / "shards" / "shard-000001.npy"
    np.save(p, np.array([Payload(), 1], dtype=object), allow_pickle=True)
    assert b"mkdir" in p.read_bytes()  # the pickle really is in there
    for fix_size in (False, True):
        if fix_size:
            _set_marker_size(store, 1, "shard-000001.npy")
        rc, _, err = run_cli(capsys, "info", str(store), "--verify")
        assert rc == 2
        line = one_line_error(err, "shard-000001.npy")
        if fix_size:
            assert "dtype object" in line
    assert not witness.exists()


def _index_lines(store: Path) -> list[str]:
    return (store / "index.jsonl").read_text().splitlines(keepends=True)


@pytest.mark.parametrize("edit, needles", [
    # a line cut in half: invalid JSON
    (lambda ls: ls[:2] + [ls[2][:20] + "\n"] + ls[3:], ["index.jsonl:3", "damaged"]),
    # a line without its shard (was KeyError: 'shard')
    (lambda ls: ls[:1] + [json.dumps({k: v for k, v in json.loads(ls[1]).items()
                                      if k != "shard"}) + "\n"] + ls[2:],
     ["index.jsonl:2", "field 'shard'"]),
    # an offset past the end of the shard (was "mmap length is greater than file size")
    (lambda ls: ls[:4] + [json.dumps({**json.loads(ls[4]), "offset": 10 ** 6}) + "\n"] + ls[5:],
     ["index.jsonl", "shard-000002", "differ"]),
    # two lines of one shard swapped: every id would read another clip's features
    (lambda ls: [ls[1], ls[0]] + ls[2:], ["index.jsonl", "shard-000000", "swapped"]),
    # a duplicated line
    (lambda ls: ls + [ls[0]], ["index.jsonl", "occurs twice"]),
    # a line dropped
    (lambda ls: ls[:-1], ["index.jsonl", "shard-000002", "records 2 items"]),
])
def test_bad_index_lines_named(store: Path, edit, needles, capsys) -> None:
    (store / "index.jsonl").write_text("".join(edit(_index_lines(store))))
    before = tree_hash(store)
    rc, _, err = run_cli(capsys, "info", str(store))
    assert rc == 2
    one_line_error(err, *needles)
    assert tree_hash(store) == before


@pytest.mark.parametrize("key, value", [("n_mels", 64), ("hop_length", 999)])
def test_edited_features_json_detected(store: Path, key: str, value: int, capsys) -> None:
    path = store / "features.json"
    doc = json.loads(path.read_text())
    doc["params"]["frontend"][key] = value
    path.write_text(json.dumps(doc, indent=2))
    before = tree_hash(store)
    rc, _, err = run_cli(capsys, "info", str(store))
    assert rc == 2
    one_line_error(err, "features.json", "parameters were changed")
    assert tree_hash(store) == before


def test_altered_finite_values_found_only_by_verify(store: Path, capsys) -> None:
    """Documented limit: same size, same header, finite values: only the full hash."""
    p = store / "shards" / "shard-000001.npy"
    x = np.load(p)
    x[3, 5] += 1.0
    np.save(p, x)
    before = tree_hash(store)
    rc, _, _ = run_cli(capsys, "info", str(store))
    assert rc == 0  # the cheap checks cannot see this
    rc, _, err = run_cli(capsys, "info", str(store), "--verify")
    assert rc == 2
    one_line_error(err, "shard-000001.npy", "content differs")
    with pytest.raises(AudioclError, match="shard-000001.npy"):
        FeatureStore(store, verify=True)
    assert tree_hash(store) == before


def test_edited_errors_jsonl_found(store: Path, tmp_path: Path, fsdd_rows, capsys) -> None:
    # a store with one failed item, so errors.jsonl has a line to edit
    manifest = write_rows(tmp_path / "m.jsonl", fsdd_rows[:2] + [{"id": "gone", "path": "/nope.wav"}])
    out = tmp_path / "s2"
    extract(manifest, out, get_preset("speech16k"), shard_size=2, runner="inline", progress=False)
    errs = out / "errors.jsonl"
    errs.write_text(errs.read_text().replace('"missing"', '"silent!"'))
    assert run_cli(capsys, "info", str(out))[0] == 0  # same size: cheap checks pass
    rc, _, err = run_cli(capsys, "info", str(out), "--verify")
    assert rc == 2
    one_line_error(err, "errors.jsonl")


# ----------------------------------------------------------------- 2: resume, other manifest


@pytest.mark.parametrize("change", ["shorter", "different"])
def test_resume_with_other_manifest_changes_nothing(store: Path, fsdd_rows, tmp_path: Path,
                                                    change: str) -> None:
    rows = fsdd_rows[:3] if change == "shorter" else fsdd_rows[:2] + fsdd_rows[3:] + fsdd_rows[2:3]
    manifest = write_rows(tmp_path / "m2.jsonl", rows)
    before, chash = tree_hash(store), content_hash(store)
    with pytest.raises(AudioclError) as e:
        extract(manifest, store, get_preset("speech16k"), shard_size=2, resume=True,
                runner="inline", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "nothing was changed" in msg and str(store) in msg
    assert ("longer manifest" in msg) if change == "shorter" else ("shard-000001" in msg)
    assert tree_hash(store) == before and content_hash(store) == chash
    assert (store / "index.jsonl").is_file()
    FeatureStore(store)  # still opens


# ----------------------------------------------------------------- 3: bad audio files


def test_truncated_dir_and_symlink_loop_get_their_reasons(tmp_path: Path, fsdd_rows) -> None:
    tone = (0.3 * np.sin(np.arange(5148) / 5)).astype(np.float32)
    sf.write(tmp_path / "full.wav", tone, 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 1716 * 2])  # header says 5148 samples
    (tmp_path / "x.wav").mkdir()
    os.symlink(tmp_path / "loop.wav", tmp_path / "loop.wav")
    rows = fsdd_rows[:1] + [
        {"id": "cut", "path": str(tmp_path / "cut.wav")},
        {"id": "dir", "path": str(tmp_path / "x.wav")},
        {"id": "loop", "path": str(tmp_path / "loop.wav")},
        {"id": "gone", "path": str(tmp_path / "none.wav")},
    ]
    manifest = write_rows(tmp_path / "m.jsonl", rows)
    s = extract(manifest, tmp_path / "store", get_preset("speech16k"), shard_size=2,
                runner="inline", progress=False)
    assert s["done"] == 1
    assert s["failed_by_reason"] == {"missing": 1, "not_a_file": 1, "symlink_loop": 1,
                                     "truncated": 1}
    errors = {e["id"]: e for e in FeatureStore(tmp_path / "store").errors()}
    assert "declares 5148 samples, only 1716" in errors["cut"]["message"]
    assert errors["dir"]["reason"] == "not_a_file" and errors["loop"]["reason"] == "symlink_loop"


# ----------------------------------------------------------------- 5: damaged manifests


def _gz_flipped(tmp_path: Path, rows: list[dict]) -> Path:
    many = [{**r, "id": f"{r['id']}-{k}"} for k in range(40) for r in rows]
    raw = gzip.compress("".join(json.dumps(r) + "\n" for r in many).encode(), mtime=0)
    data = bytearray(raw)
    data[len(data) // 2] ^= 0xFF
    p = tmp_path / "m.jsonl.gz"
    p.write_bytes(bytes(data))
    return p


def _deep(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "m.jsonl"
    deep = '{"id": "deep", "path": "a.wav", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    p.write_text(json.dumps(rows[0]) + "\n" + deep + "\n")
    return p


def _dup_key(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "m.jsonl"
    line = json.dumps(rows[1])[:-1] + ', "labels": ["other"]}'
    p.write_text(json.dumps(rows[0]) + "\n" + line + "\n")
    return p


@pytest.mark.parametrize("make, needles", [
    (_gz_flipped, ["m.jsonl.gz:", "the gzip data is damaged"]),
    (_deep, ["m.jsonl:2", "nested too deeply"]),
    (_dup_key, ["m.jsonl:2", "field 'labels'", "occurs twice"]),
])
def test_damaged_manifest_one_line_nothing_written(tmp_path: Path, fsdd_rows, make, needles,
                                                   capsys) -> None:
    manifest = make(tmp_path, fsdd_rows)
    rc, _, err = run_cli(capsys, "info", str(manifest))
    assert rc == 2
    one_line_error(err, *needles)
    out = tmp_path / "store"
    with pytest.raises(AudioclError) as e:
        extract(manifest, out, get_preset("speech16k"), runner="inline", progress=False)
    assert all(n in str(e.value) for n in needles)
    assert not out.exists()  # no half-made store


# ----------------------------------------------------------------- 6: export keys


def test_export_keys_collision_free_and_long_ids(tmp_path: Path, fsdd_rows, capsys) -> None:
    import tarfile

    wav = fsdd_rows[0]["path"]
    long_id = "clotho/" + "A very long Clotho file name with spaces and words " * 3 + ".wav"
    ids = ["a_b_2", "a/b", "a_b", long_id]
    manifest = write_rows(tmp_path / "m.jsonl", [{"id": i, "path": wav} for i in ids])
    before = tree_hash(tmp_path)
    rc, out, err = run_cli(capsys, "export", "webdataset", "--manifest", str(manifest),
                           "--out", str(tmp_path / "wds"), "--sample-rate", "16000")
    assert rc == 0, err
    with tarfile.open(tmp_path / "wds" / "000000.tar") as tar:
        names = tar.getnames()
        metas = [json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")]
    keys = [n[: -len(".json")] for n in names if n.endswith(".json")]
    assert len(set(keys)) == 4 and sorted(m["id"] for m in metas) == sorted(ids)
    assert "a_b_2" in keys and all(len(n) <= 100 for n in names)
    # deterministic: the same ids in another order give the same key for each id
    manifest2 = write_rows(tmp_path / "m2.jsonl", [{"id": i, "path": wav} for i in reversed(ids)])
    assert run_cli(capsys, "export", "webdataset", "--manifest", str(manifest2), "--out",
                   str(tmp_path / "wds2"), "--sample-rate", "16000")[0] == 0
    with tarfile.open(tmp_path / "wds2" / "000000.tar") as tar:
        pairs2 = {json.loads(tar.extractfile(n).read())["id"]: n[:-5]
                  for n in tar.getnames() if n.endswith(".json")}
    assert pairs2 == {m["id"]: k for m, k in zip(metas, keys)}
    assert before != tree_hash(tmp_path)


def test_export_refuses_an_id_spelled_like_a_hashed_key(tmp_path: Path, fsdd_rows,
                                                        capsys) -> None:
    from audiocl.data.webdataset import sample_keys

    taken = sample_keys(["a/b", "a_b"])["a/b"]
    wav = fsdd_rows[0]["path"]
    manifest = write_rows(tmp_path / "m.jsonl",
                          [{"id": i, "path": wav} for i in ("a/b", "a_b", taken)])
    rc, _, err = run_cli(capsys, "export", "webdataset", "--manifest", str(manifest),
                         "--out", str(tmp_path / "wds"))
    assert rc == 2
    one_line_error(err, "m.jsonl", "'a/b'", repr(taken))
    assert not (tmp_path / "wds").exists()


@pytest.mark.parametrize("template", ["{0} {1}", "{label}", "no slot", "{} and {}"])
def test_export_bad_text_template_one_line(tmp_path: Path, fsdd_rows, template, capsys) -> None:
    wav = fsdd_rows[0]["path"]
    manifest = write_rows(tmp_path / "m.jsonl", [{"id": "x", "path": wav, "labels": ["dog"]}])
    rc, _, err = run_cli(capsys, "export", "webdataset", "--manifest", str(manifest),
                         "--out", str(tmp_path / "wds"), "--text-template", template)
    assert rc == 2
    one_line_error(err, "--text-template", repr(template))
    assert not (tmp_path / "wds").exists()


# ----------------------------------------------------------------- 7: disk full


class SmallDisk:
    """A folder that fills up: a tmpfs of ``size`` when we may mount one (root), else
    a plain folder and an RLIMIT_FSIZE for the child (writes fail with EFBIG)."""

    def __init__(self, path: Path, size: int, file_limit: int) -> None:
        self.path = path
        self.size = file_limit  # RLIMIT_FSIZE limits each file, not the folder
        path.mkdir()
        self.mounted = os.geteuid() == 0 and not os.environ.get("AUDIOCL_TEST_NO_TMPFS") and (
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True).returncode == 0)

    def preexec(self):
        if self.mounted:
            return None
        size = self.size

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        return limit

    def grow(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.path)], check=True)
        self.size = 1 << 40

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    disks: list[SmallDisk] = []

    def make(size: int, file_limit: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size, file_limit))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


def _run(args: list[str], disk: SmallDisk) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV,
                          preexec_fn=disk.preexec())


def test_prepare_disk_full_leaves_nothing_and_next_run_cleans_up(tmp_path: Path, small_disk,
                                                                 shared_dir: Path) -> None:
    root = shared_dir / "data" / "fsdd-dev"
    disk = small_disk(64 * 1024, 64 * 1024)  # the 2000-line manifest is ~600 kB
    out = disk.path / "fsdd.jsonl"
    prep = [sys.executable, "-m", "audiocl.cli", "prepare", "fsdd", "--root", str(root),
            "--out", str(out), "--no-probe", "--quiet"]
    r = _run(prep, disk)
    assert r.returncode == 2, r.stderr
    one_line_error(r.stderr, "audiocl prepare: error:", str(out), "cannot write")
    assert sorted(os.listdir(disk.path)) == []  # no partial file, no temporary file
    # a writer killed outright leaves its hidden temporary file; the next run removes it
    stale = disk.path / ".fsdd.jsonl.tmp-999999999"
    stale.write_bytes(b"{")
    disk.grow()
    r = _run(prep, disk)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(disk.path)) == ["fsdd.jsonl"]
    assert sum(1 for _ in open(out)) == 2000


_EXTRACT = """
import sys
from audiocl.audio.frontend import get_preset
from audiocl.data.extract import extract
from audiocl.errors import AudioclError
try:
    extract(sys.argv[1], sys.argv[2], get_preset("speech16k"), shard_size=2, runner="inline",
            progress=False, resume=len(sys.argv) > 3)
except AudioclError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_extract_disk_full_leaves_no_partial_file_then_resumes(base_store: Path, fsdd_rows,
                                                               tmp_path: Path, small_disk) -> None:
    manifest = write_rows(tmp_path / "m.jsonl", fsdd_rows)
    # a shard's .npy is ~38 kB: two fit on the tmpfs; none under the 20 kB file limit
    disk = small_disk(96 * 1024, 20 * 1024)
    out = disk.path / "store"
    args = [sys.executable, "-c", _EXTRACT, str(manifest), str(out)]
    if disk.mounted:  # a real full disk: in process (a child would spend ~15 s importing)
        with pytest.raises(AudioclError) as e:
            extract(manifest, out, get_preset("speech16k"), shard_size=2, runner="inline",
                    progress=False)
        r = subprocess.CompletedProcess(args, 2, "", f"error: {e.value}\n")
    else:
        r = _run(args, disk)
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr, "error:", "could not be written", "--resume")
    assert "No space left" in line or "File too large" in line
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    shards = out / "shards"
    # a shard file without its marker would be partial: only finished shards are kept
    for npy in shards.glob("*.npy"):
        assert npy.with_suffix(".done").is_file(), npy
    assert not (out / "index.jsonl").exists()
    disk.grow()
    if disk.mounted:
        extract(manifest, out, get_preset("speech16k"), shard_size=2, runner="inline",
                progress=False, resume=True)
    else:
        r = _run([*args, "--resume"], disk)
        assert r.returncode == 0, r.stderr
    assert content_hash(out) == content_hash(base_store)


def test_pickle_payload_class_is_real() -> None:
    """Guard for test_pickled_shard_is_never_unpickled: np.load WITH pickles allowed
    does run the payload, so that test would fail if the store unpickled."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        witness = Path(d) / "ran"

        class Payload:
            def __reduce__(self):
                return (os.mkdir, (str(witness),))

        p = Path(d) / "x.npy"
        np.save(p, np.array([Payload()], dtype=object), allow_pickle=True)
        np.load(p, allow_pickle=True)
        assert witness.exists()
