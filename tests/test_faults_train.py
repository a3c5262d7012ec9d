"""Faults and user mistakes around training (issue 14), through the CLI a user runs.

Each case asserts the exit status (2 for a mistake or damage), that the one
line on stderr names the place (file, field, checkpoint) and that nothing
was lost or silently changed (content hashes of the output folder before and
after). Real pieces: FSDD clips in a feature store made by the project's
extraction (tests/train_store.py), a tiny MLP audio tower and byte-level
text tower, CLIP loss, a few optimiser steps.

Families: output folder, resume, data, config, model folder, disk, Ray paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_store import build_store

from audiocl.cli import main

REPO = Path(__file__).resolve().parents[1]
FRAMES, MELS = 16, 32


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


def _model(embed_dim: int = 16) -> dict:
    return {
        "embed_dim": embed_dim,
        "towers": {
            "audio": {
                "modality": "audio",
                "encoder": {"type": "mlp", "input_dim": FRAMES * MELS, "hidden": [32]},
                "projection": {"type": "linear"},
            },
            "text": {
                "modality": "text",
                "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0, "max_length": 32},
                "projection": {"type": "linear"},
            },
        },
    }  # fmt: skip


def _config(tmp_path: Path, store, out: Path, *, name: str = "train.yaml", **sections) -> Path:
    store_dir, manifest = store
    cfg = {
        "model": _model(),
        "loss": {"name": "clip"},
        "data": {"store": str(store_dir), "manifest": str(manifest), "batch_size": 8,
                 "max_frames": FRAMES, "length_policy": "rand_trunc", "shuffle": True},
        "optim": {"lr": 0.01},
        "train": {"max_steps": 2, "log_every": 1, "ckpt_every": 1, "seed": 5, "progress": False,
                  "output_dir": str(out)},
    }  # fmt: skip
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hash); {} when absent."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _train(capsys, *args: str) -> tuple[int, list[str], str]:
    """``audiocl train ARGS`` in process: (exit status, stderr lines, stdout)."""
    capsys.readouterr()
    rc = main(["train", *args])
    cap = capsys.readouterr()
    return rc, [ln for ln in cap.err.splitlines() if ln.strip()], cap.out


def _one_error(err: list[str]) -> str:
    lines = [ln for ln in err if ln.startswith("audiocl train: error:")]
    assert len(lines) == 1, err
    assert not any("Traceback" in ln for ln in err), err
    return lines[0]


def _curve(out: Path) -> list[tuple[str, ...]]:
    """The deterministic columns of the training log (timings differ run to run)."""
    import csv

    with open(out / "train_log.csv", newline="") as f:
        return [(r["step"], r["loss"], r["lr"], r["scale"], r["grad_norm"]) for r in csv.DictReader(f)]


def _steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))


# ------------------------------------------------------------------ output folder
def test_used_output_dir_is_refused_and_overwrite_replaces_it(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, train={"max_steps": 4, "keep_checkpoints": 2})
    assert _train(capsys, "--config", str(cfg))[0] == 0
    before = _hashes(out)
    assert _steps(out) == [3, 4]

    # a new, shorter run into the same folder would export the old run's model: refused
    cfg2 = _config(tmp_path, store, out, name="new.yaml", train={"max_steps": 2, "seed": 9})
    rc, err, _ = _train(capsys, "--config", str(cfg2))
    msg = _one_error(err)
    assert rc == 2 and str(out) in msg and "--resume" in msg and "--overwrite" in msg and "step 4" in msg
    assert _hashes(out) == before

    # --overwrite: the old checkpoints go, the new run's model is exported
    (out / "notes.txt").write_text("mine\n")
    rc, err, _ = _train(capsys, "--config", str(cfg2), "--overwrite")
    assert rc == 0, err
    assert _steps(out) == [1, 2]
    assert (out / "notes.txt").read_text() == "mine\n"  # not a file a run writes: kept
    from safetensors.torch import load_file

    exported = load_file(str(out / "model" / "model.safetensors"))
    last = load_file(str(out / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert exported.keys() == last.keys() and all((exported[k] == last[k]).all() for k in last)


def test_output_dir_that_is_a_file(tmp_path, store, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder\n")
    before = _hashes(out)
    rc, err, _ = _train(capsys, "--config", str(_config(tmp_path, store, out)))
    msg = _one_error(err)
    assert rc == 2 and str(out) in msg and "is a file" in msg
    assert _hashes(out) == before
    rc, err, _ = _train(capsys, "--config", str(_config(tmp_path, store, out / "sub")))
    msg = _one_error(err)
    assert rc == 2 and f"{out} is a file" in msg
    assert _hashes(out) == before


# ------------------------------------------------------------------------- resume
def test_resume_with_changed_config_is_refused_unless_allowed_or_forced(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out)
    assert _train(capsys, "--config", str(cfg))[0] == 0
    before = _hashes(out)
    for override, key in (("optim.lr=0.02", "optim.lr"), ("data.batch_size=16", "data.batch_size")):
        rc, err, _ = _train(capsys, "--config", str(cfg), "--resume", "train.max_steps=3", override)
        msg = _one_error(err)
        assert rc == 2 and key in msg and "--force" in msg and "step_00000002" in msg, msg
        assert _hashes(out) == before
    # another model: the changed keys are named, no traceback
    rc, err, _ = _train(capsys, "--config", str(cfg), "--resume", "model.embed_dim=8")
    msg = _one_error(err)
    assert rc == 2 and "model.embed_dim" in msg
    # forced onto another model: one line, the checkpoint does not fit
    rc, err, _ = _train(capsys, "--config", str(cfg), "--resume", "--force", "model.embed_dim=8")
    msg = _one_error(err)
    assert rc == 2 and "model.safetensors" in msg and "does not fit" in msg
    assert _hashes(out) == before

    # an allowed change (run length, logging) continues the run
    rc, err, stdout = _train(capsys, "--config", str(cfg), "--resume", "train.max_steps=3", "train.log_every=1")
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["last_loss"] == summary["last_loss"]  # not NaN
    # a finished run resumed with nothing to do reports its last loss, not NaN
    rc, err, stdout = _train(capsys, "--config", str(cfg), "--resume", "train.max_steps=3")
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert rc == 0 and summary["steps"] == 3 and isinstance(summary["last_loss"], float)
    assert summary["last_loss"] == summary["last_loss"] and "nothing to train" in stdout
    # --force takes a changed lr
    rc, err, stdout = _train(capsys, "--config", str(cfg), "--resume", "--force", "train.max_steps=4", "optim.lr=0.02")
    assert rc == 0 and json.loads(stdout.strip().splitlines()[-1])["steps"] == 4


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, train={"max_steps": 3, "keep_checkpoints": 3})
    assert _train(capsys, "--config", str(cfg))[0] == 0
    rows = _curve(out)
    latest = out / "checkpoints" / "step_00000003" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # torn write
    rc, err, stdout = _train(capsys, "--config", str(cfg), "--resume")
    assert rc == 0, err
    assert any("step_00000003" in ln and "damaged" in ln for ln in err), err
    assert any("falling back to" in ln and "step_00000002" in ln for ln in err), err
    assert "step 2," in stdout
    # step 3 retrained from step 2 gives the same row as the first time
    assert _curve(out) == rows and len(rows) == 3

    # every checkpoint damaged: one line, exit 2, nothing removed
    for p in (out / "checkpoints").glob("step_*/state.pt"):
        p.write_bytes(b"\0" * p.stat().st_size)
    before = _hashes(out)
    rc, err, _ = _train(capsys, "--config", str(cfg), "--resume")
    msg = _one_error(err)
    assert rc == 2 and "no usable checkpoint" in msg and str(out / "checkpoints") in msg
    assert _hashes(out) == before


# --------------------------------------------------------------------------- data
def test_manifest_items_missing_from_the_store(tmp_path, store, capsys):
    store_dir, manifest = store
    lines = manifest.read_text().splitlines()
    extra = []
    for i in range(3):
        item = json.loads(lines[i])
        item["id"] = f"not_extracted_{i}"
        extra.append(json.dumps(item))
    bigger = tmp_path / "bigger.jsonl"
    bigger.write_text("\n".join(lines + extra) + "\n")
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, data={"manifest": str(bigger)})
    rc, err, _ = _train(capsys, "--config", str(cfg))
    msg = _one_error(err)
    assert rc == 2 and str(bigger) in msg and "3 of its items" in msg and "not_extracted_0" in msg
    assert _hashes(out) == {}
    # the deliberate option: train without them, saying how many
    rc, err, _ = _train(capsys, "--config", str(cfg), "data.on_missing=skip")
    assert rc == 0, err
    assert any(ln.startswith("warning:") and "leaving out 3 item(s)" in ln for ln in err), err


def test_one_item_per_batch_is_refused(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, data={"batch_size": 1})
    rc, err, _ = _train(capsys, "--config", str(cfg))
    msg = _one_error(err)
    assert rc == 2 and "data.batch_size=1" in msg and "at least 2 items" in msg
    assert _hashes(out) == {}


# ------------------------------------------------------------------------- config
def test_yaml_alias_bomb_is_refused_at_load(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out)
    text = cfg.read_text()
    bomb = ["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    bomb += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    # 10^9 leaves under loss.kwargs.local_loss, a free-form option
    text = text.replace("loss:\n  name: clip\n", "bomb:\n" + "".join(f"  {b}\n" for b in bomb)
                        + "loss:\n  name: clip\n  kwargs:\n    local_loss: *a8\n")  # fmt: skip
    assert "*a8" in text
    cfg.write_text(text)
    t0 = time.perf_counter()
    rc, err, _ = _train(capsys, "--config", str(cfg))
    msg = _one_error(err)
    assert rc == 2 and str(cfg) in msg and "alias" in msg
    assert time.perf_counter() - t0 < 10
    assert not out.exists()


def test_two_modality_loss_with_three_modalities(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out)
    for loss in ("clip", "siglip", "dcl", "cwcl", "multipositive", "hardneg", "align_uniform"):
        rc, err, _ = _train(capsys, "--config", str(cfg), f"loss.name={loss}", "loss.kwargs.modalities=[audio, text, text]")
        msg = _one_error(err)
        assert rc == 2 and f"loss '{loss}'" in msg and "loss.kwargs.modalities" in msg
    assert not out.exists()


# ------------------------------------------------------------------- model folder
def test_garbage_safetensors_header_in_a_model_folder(tmp_path, store, capsys):
    store_dir, manifest = store
    out = tmp_path / "run"
    assert _train(capsys, "--config", str(_config(tmp_path, store, out)))[0] == 0
    weights = out / "model" / "model.safetensors"
    weights.write_bytes((2**40).to_bytes(8, "little") + b"{garbage" + weights.read_bytes()[16:])
    before = _hashes(out)
    capsys.readouterr()
    classes = tmp_path / "classes.txt"  # two classes: a one-class manifest is refused before the model loads
    classes.write_text("zero\none\n")
    rc = main(["eval", "zeroshot", "--model", str(out / "model"), "--manifest", str(manifest),
               "--store", str(store_dir), "--classes", str(classes), "--out", str(tmp_path / "zs.json")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(weights) in err[0] and "safetensors" in err[0], err
    assert _hashes(out) == before and not (tmp_path / "zs.json").exists()


def test_hub_name_as_tokenizer_path(tmp_path, store, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out)
    text_enc = "model.towers.text.encoder"
    for key in ("tokenizer_path", "path"):
        rc, err, _ = _train(capsys, "--config", str(cfg), f"{text_enc}={{type: hf_text, {key}: sentence-transformers/all-MiniLM-L6-v2}}")
        msg = _one_error(err)
        assert rc == 2 and f"'{key}'" in msg and "sentence-transformers/all-MiniLM-L6-v2" in msg and "local folder" in msg
    assert not out.exists()


# ---------------------------------------------------------------------------- disk
def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0  # fmt: skip


def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_disk_full_during_train_leaves_no_partial_checkpoint(tmp_path, store):
    """A real full disk (a 1 MiB tmpfs, when root may mount one), else a real
    file-size limit (RLIMIT_FSIZE: EFBIG on the first write past it)."""
    disk = tmp_path / "disk"
    out = disk / "run"
    cfg = _config(tmp_path, store, out)
    mounted = _tmpfs(disk, "1M")
    try:
        if mounted:
            # leave room for the logs but not for the first checkpoint
            (disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
            preexec = None
        else:
            import resource

            def preexec() -> None:  # the run's files may not grow past 64 KiB
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        r = subprocess.run([sys.executable, "-m", "audiocl.cli", "train", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=300, env=_cli_env(),
                           preexec_fn=preexec)  # fmt: skip
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, r.stderr[-2000:]
        msg = _one_error(err)
        assert "cannot write" in msg and "checkpoint" in msg and str(out / "checkpoints") in msg, msg
        leftovers = [p.name for p in (out / "checkpoints").iterdir()] if (out / "checkpoints").is_dir() else []
        assert leftovers == [], leftovers  # no .tmp-*, no half checkpoint
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


def test_leftovers_of_a_killed_writer_are_cleaned_by_the_next_run(tmp_path, store, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, train={"max_steps": 2})
    assert _train(capsys, "--config", str(cfg))[0] == 0
    # what a SIGKILL during a save leaves: the writer's temporary folder
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free: the writer is gone
    tmp = out / "checkpoints" / f".tmp-step_00000003-{child.pid}"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    mine = out / "checkpoints" / f".tmp-step_00000009-{os.getpid()}"  # a live writer's: kept
    mine.mkdir()
    # and a log row torn short by the kill (its step still parses)
    with open(out / "train_log.csv", "a") as f:
        f.write("1")
    rc, err, _ = _train(capsys, "--config", str(cfg), "--resume", "train.max_steps=3")
    assert rc == 0, err
    assert not tmp.exists() and mine.exists()
    assert _steps(out) == [2, 3]
    assert [row[0] for row in _curve(out)] == ["1", "2", "3"]
    shutil.rmtree(mine)


# ------------------------------------------------------------- Ray: relative paths
def test_relative_config_paths_with_two_ray_workers_from_another_folder(tmp_path, store):
    """A recipe-style config (conf/train.yaml, paths relative to the recipe
    folder) trains with --workers 2 from any working directory: the paths are
    resolved before Ray moves the workers into folders of their own."""
    store_dir, manifest = store
    recipe = tmp_path / "recipe"
    (recipe / "conf").mkdir(parents=True)
    (recipe / "data").mkdir()
    (recipe / "data" / "store").symlink_to(store_dir, target_is_directory=True)
    shutil.copy(manifest, recipe / "data" / "train.jsonl")
    cfg = _config(recipe / "conf", store, Path("exp/run"), data={"store": "data/store", "manifest": "data/train.jsonl"},
                  train={"max_steps": 2, "ckpt_every": 2})  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "audiocl.cli", "train", "--config", str(cfg), "--workers", "2"],
                       cwd=elsewhere, capture_output=True, text=True, timeout=540, env=_cli_env())  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = recipe / "exp" / "run"
    assert (out / "model" / "model.safetensors").is_file()
    assert _steps(out) == [2]
    assert list(elsewhere.iterdir()) == []  # nothing written relative to the working directory


def test_ray_data_mistakes_are_one_line_before_ray_starts(tmp_path, store, capsys):
    """With --workers 2 the driver makes the workers' data checks first: one
    line, not the worker's error inside dozens of lines of Ray log."""
    store_dir, manifest = store
    item = json.loads(manifest.read_text().splitlines()[0])
    item["id"] = "ghost_1"
    bigger = tmp_path / "bigger.jsonl"
    bigger.write_text(manifest.read_text() + json.dumps(item) + "\n")
    out = tmp_path / "run"
    cfg = _config(tmp_path, store, out, data={"manifest": str(bigger)})
    rc, err, _ = _train(capsys, "--config", str(cfg), "--workers", "2")
    msg = _one_error(err)
    assert rc == 2 and len(err) == 1 and "ghost_1" in msg and str(bigger) in msg
    assert not out.exists()  # Ray never started (it would have made out/ray)
