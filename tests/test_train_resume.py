"""A run SIGKILLed at 5 random points and resumed reproduces the uninterrupted loss curve exactly.

Real pieces end to end: FSDD clips -> feature store (the project's extraction),
``audiocl train`` in a subprocess (CNN audio tower with dropout and BatchNorm,
byte-level text transformer with dropout, CLIP loss, gradient-cached
micro-batches, random caption sampling, rand_trunc crops). One run is
SIGKILLed, resumed with ``--resume``, SIGKILLed again, ... at 5 seeded random
points (a logged step count plus a random delay, so a kill may land inside a
step, a checkpoint save or start-up; checkpoints every 4 steps, 6 steps per
epoch, so resumes start inside an epoch), then resumed to the end. The CSV
logs must match the uninterrupted run step by step as strings (exact float
equality), and so must the final weights.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from train_store import build_store, model_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


def _config(tmp_path: Path, store: tuple[Path, Path], out: str) -> Path:
    store_dir, manifest = store
    cfg = {
        "model": model_config(),
        "loss": {"name": "clip"},
        "data": {
            "store": str(store_dir), "manifest": str(manifest), "val_manifest": str(manifest),
            "batch_size": 16, "micro_batch_size": 8, "max_frames": 48, "length_policy": "rand_trunc",
        },
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_steps": 3, "min_lr": 1e-5},
        "train": {
            "epochs": 3, "log_every": 1, "ckpt_every": 4, "val_every": 6, "seed": 7,
            "output_dir": str(tmp_path / out), "progress": True,
        },
    }  # fmt: skip
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "audiocl.cli", "train", "--config", str(config), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sigkill_at_5_random_points_then_resume_is_exact(tmp_path, store):
    cfg_a = _config(tmp_path, store, "full")
    done = subprocess.run(_cmd(cfg_a), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    full = _rows(tmp_path / "full" / "train_log.csv")
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))
    assert all(0.0 <= float(r["data_wait_frac"]) <= 1.0 and float(r["throughput"]) > 0 for r in full)
    assert [int(r["step"]) for r in full] == list(range(1, 19))

    cfg_b = _config(tmp_path, store, "killed")
    log_b = tmp_path / "killed" / "train_log.csv"
    # 5 seeded random kill points: after k logged steps, plus a delay of up to 50 ms (a
    # fraction of a step, so kills also land inside checkpoint saves). A longer delay let
    # an idle machine run 2+ more steps, past the last step (a flaky kill count of 18).
    rng = random.Random(20261201)
    points = sorted(rng.sample(range(2, 16), 5))
    delays = [rng.uniform(0.0, 0.05) for _ in points]
    kills = []
    for i, (k, delay) in enumerate(zip(points, delays)):
        # the interrupted runs load data in a worker process; batches must not depend on that
        extra = ["data.num_workers=1"] + (["--resume"] if i else [])
        proc = subprocess.Popen(_cmd(cfg_b, *extra), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started = threading.Event()

        def _watch(p: subprocess.Popen = proc, ev: threading.Event = started) -> None:
            for line in p.stdout:  # the log file is (re)opened before "training:" is printed
                if line.startswith("training:"):
                    ev.set()
            ev.set()

        threading.Thread(target=_watch, daemon=True).start()
        assert started.wait(240), "the run did not start"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(_rows(log_b)) < k:
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before kill point {k}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(len(_rows(log_b)))
    assert len(kills) == 5 and all(1 <= n < 18 for n in kills), kills
    from audiocl.train.checkpoint import find_latest

    latest = find_latest(tmp_path / "killed")
    assert latest is not None and int(latest.name.split("_")[1]) in (4, 8, 12, 16)

    again = subprocess.run(_cmd(cfg_b, "data.num_workers=1", "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resume:" in again.stdout
    resumed = _rows(log_b)
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):
        assert (a["step"], a["loss"], a["lr"], a["scale"], a["grad_norm"]) == (
            b["step"], b["loss"], b["lr"], b["scale"], b["grad_norm"]
        ), f"diverged at step {a['step']}"
    val_a = _rows(tmp_path / "full" / "val_log.csv")
    val_b = _rows(tmp_path / "killed" / "val_log.csv")
    assert val_a == val_b and len(val_a) == 3

    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), k

    from audiocl.models import load_model

    model = load_model(tmp_path / "killed" / "model")
    assert model.frontend is not None and model.embed_text(["two"]).shape == (1, 16)
