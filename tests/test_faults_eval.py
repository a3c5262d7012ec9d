"""Evaluation faults (issue #14): one line naming the place, exit 2, nothing written or changed.

Real FSDD recordings (../shared/data/fsdd-dev) and a tiny untrained model
(CNN audio tower, byte-level text tower), all through ``audiocl eval``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from audiocl.cli import main

DIGITS = ("zero", "one", "two")
SR = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


def _items(shared_dir: Path, digits=range(3), speakers=("jackson", "theo"), n: int = 2) -> list[dict]:
    rec = shared_dir / "data" / "fsdd-dev" / "recordings"
    out = []
    for d in digits:
        for spk in speakers:
            for i in range(n):
                p = rec / f"{d}_{spk}_{i}.wav"
                assert p.is_file(), p
                out.append({"id": f"{d}_{spk}_{i}", "path": str(p), "labels": [DIGITS[d]],
                            "texts": [DIGITS[d]], "speaker": spk})
    return out


def _write_manifest(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from audiocl.audio.frontend import get_preset
    from audiocl.models import MultiTowerModel

    torch.manual_seed(0)
    cfg = {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1, "heads": 2}},
        },
    }
    fe = get_preset("laion_clap", sample_rate=SR, f_max=8000.0, hop_length=160, clip_samples=SR,
                    length_policy="repeatpad+trunc")
    m = MultiTowerModel.from_config(cfg, frontend=fe, prompts=["the digit {}"])
    d = tmp_path_factory.mktemp("model") / "tiny"
    m.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def manifest(shared_dir, tmp_path_factory) -> Path:
    return _write_manifest(_items(shared_dir), tmp_path_factory.mktemp("m") / "fsdd.jsonl")


def _tree_hash(folder: Path) -> dict[str, str]:
    """Content hash of every file under ``folder`` (hidden temporaries included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("audiocl eval: error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_one_class_is_refused(model_dir, shared_dir, tmp_path, capsys):
    m = _write_manifest(_items(shared_dir, digits=[1]), tmp_path / "ones.jsonl")
    out = tmp_path / "out" / "z.json"
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(m), "--out", str(out)],
             str(m), "at least 2 classes")
    assert not out.parent.exists()
    # a class list of one class: the message names the class file
    classes = tmp_path / "classes.txt"
    classes.write_text("one\n")
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(m), "--classes", str(classes),
                      "--out", str(out)], str(classes), "at least 2 classes")
    assert not out.parent.exists()


def test_empty_label_is_not_a_class(model_dir, shared_dir, tmp_path, capsys):
    rows = _items(shared_dir)
    rows[2]["labels"] = [""]
    m = _write_manifest(rows, tmp_path / "m.jsonl")
    before = m.read_bytes()
    out = tmp_path / "z.json"
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(m), "--out", str(out)],
             f"{m}:3", rows[2]["id"], "empty label")
    assert not out.exists() and m.read_bytes() == before


@pytest.mark.parametrize("template", ["{0} {1}", "{label}", "{} and {}", "no slot", "{:>5}", "{} }"])
def test_bad_prompt_template_is_refused(model_dir, manifest, tmp_path, capsys, template):
    out = tmp_path / "z.json"
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(manifest),
                      "--prompt", template, "--out", str(out)], "--prompt", repr(template))
    assert not out.exists()


def test_bad_template_in_prompts_file_names_the_line(model_dir, manifest, tmp_path, capsys):
    pf = tmp_path / "prompts.txt"
    pf.write_text("the digit {}\n# a comment\n{0} {1}\n")
    out = tmp_path / "z.json"
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(manifest),
                      "--prompts-file", str(pf), "--out", str(out)], f"{pf}:3")
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["zeroshot", "retrieval"])
@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_below_one_is_refused(model_dir, manifest, tmp_path, capsys, cmd, size):
    out = tmp_path / "z.json"
    _refused(capsys, ["eval", cmd, "--model", str(model_dir), "--manifest", str(manifest),
                      "--batch-size", size, "--out", str(out)], "--batch-size", size)
    assert not out.exists()


def test_unknown_group_field_is_refused(model_dir, manifest, tmp_path, capsys):
    out = tmp_path / "z.json"
    _refused(capsys, ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(manifest),
                      "--group-by", "speeker", "--out", str(out)], str(manifest), "'speeker'")
    assert not out.exists()


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
    except OSError as e:
        pytest.skip(f"cannot run mount: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "filler", "ab", buffering=0) as f:  # unbuffered: close() has nothing left to write
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


def test_disk_full_leaves_no_partial_results(model_dir, manifest, tmp_path, capsys):
    """ENOSPC while writing the JSON, Markdown or PNG: no 0-byte or partial file, old results intact."""
    disk = tmp_path / "disk"
    with _small_tmpfs(disk, "1m"):
        out = disk / "z.json"
        argv = ["eval", "zeroshot", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(out)]
        # full from the start: nothing appears at all
        _fill(disk)
        err = _refused(capsys, argv, "disk full", str(disk))
        assert "No space" not in err or "cannot write" in err
        assert {p.name for p in disk.iterdir()} == {"filler"}
        # with room, the results are written; then the disk fills and a re-run changes nothing
        (disk / "filler").unlink()
        assert main(argv) == 0
        capsys.readouterr()
        made = {p.name for p in disk.iterdir()}
        assert made == {"z.json", "z.md", "z.confusion.png"}
        before = _tree_hash(disk)
        _fill(disk)
        before["filler"] = hashlib.sha256((disk / "filler").read_bytes()).hexdigest()
        _refused(capsys, [*argv, "--prompt", "a digit: {}"], "disk full")
        assert _tree_hash(disk) == before
        # some room, but not for everything (the new files are about as large as the old
        # ones and all of them must exist before any is renamed): still all or nothing
        (disk / "filler").unlink()
        need = sum((disk / n).stat().st_size for n in made)
        keep = 4096  # one tmpfs page: room for the first temporary file, not for all three
        assert need > 2 * keep
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(disk / "filler", "wb", buffering=0) as f:
            f.write(b"\0" * (free - keep))
        before = _tree_hash(disk)
        _refused(capsys, [*argv, "--prompt", "a digit: {}"], "disk full")
        assert _tree_hash(disk) == before
