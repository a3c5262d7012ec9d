"""The prepared GPU check runs as a CPU dry run: one JSON object, every section present.

``tools/gpu_check.sh --dry-run`` (what CI can run; on a machine without CUDA
it is also what the plain command does) must end with one JSON line whose
CPU-measured numbers are finite and whose CUDA-only fields say
``{"skipped": "no CUDA"}``, so the run on a lent GPU is the same code with
larger sizes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = {"skipped": "no CUDA"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), "--dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    # one JSON object and nothing else on stdout (progress and training lines go to stderr)
    assert len(lines) == 1, proc.stdout[-3000:]
    return json.loads(lines[-1])


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_dry_run_prints_every_section(report):
    assert report["check"] == "gpu_check" and report["dry_run"] is True and report["device"] == "cpu"
    for key in ("environment", "logmel", "train", "data_wait", "peak_gpu_memory_mb", "cuda_tests", "seconds"):
        assert key in report, key
    errors = {k: v for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    assert report["peak_gpu_memory_mb"] == NO_CUDA
    if not torch.cuda.is_available():
        assert report["cuda_tests"] == NO_CUDA


def test_dry_run_training_numbers_are_finite(report):
    train = report["train"]
    assert set(train) >= {"main_job_aisfx_minilm", "cnn10", "htsat_tiny"}
    for name in ("main_job_aisfx_minilm", "cnn10", "htsat_tiny"):
        r = train[name]
        if "skipped" in r:  # a weight package not installed: the reason names it
            assert "pip install" in r["skipped"] or "package" in r["skipped"], r
            continue
        assert r["batch"] == 4 and r["steps"] == 2 and r["precision"] == "bf16"
        for key in ("steps_per_s", "clips_per_s", "loss_first", "loss_last"):
            assert _finite(r[key]) and r[key] > 0, (name, key, r[key])
        assert r["clips_per_s"] == pytest.approx(4 * r["steps_per_s"])
        assert r["loss_finite"] is True
        assert 0 < r["trainable_params"] <= r["params"]
        assert r["peak_gpu_memory_mb"] == NO_CUDA
    # the main job's towers are frozen: only the projection and the temperature train
    main = train["main_job_aisfx_minilm"]
    if "skipped" not in main:
        assert main["trainable_params"] < main["params"] / 10


def test_dry_run_data_wait_and_logmel(report):
    dw = report["data_wait"]
    assert dw["model"] == "cnn10" and dw["items"] >= dw["batch"] * dw["steps"]
    runs = [k for k in dw if k.startswith("workers_")]
    assert runs == ["workers_0", "workers_1"]
    for k in runs:
        frac = dw[k]["data_wait_frac"]
        assert _finite(frac) and 0 <= frac < 1, (k, frac)
        assert _finite(dw[k]["mean_step_s"]) and dw[k]["mean_step_s"] > 0
    for preset in ("laion_clap", "aisfx", "whisper"):
        r = report["logmel"][preset]
        assert _finite(r["cpu_1thread_clips_per_s"]) and r["cpu_1thread_clips_per_s"] > 0
        assert r["gpu_clips_per_s"] == NO_CUDA and r["max_abs_diff_db"] == NO_CUDA
    # 10 s clips: 1001 frames at the LAION-CLAP hop of 480 samples (48 kHz)
    assert report["logmel"]["laion_clap"]["frames"] == 1001
