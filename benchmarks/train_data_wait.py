"""How long the trainer waits for data when training from a feature store.

Builds a real feature store with the project's extraction code (FSDD spoken
digits from ../shared when present, else synthesised tones written as WAV),
then trains a CNN audio tower + byte-level text transformer with the CLIP
loss for a fixed number of steps, twice in this process:

* ``sync``: ``data.num_workers=0`` (batches built in the training process:
  the baseline, every millisecond of reading/cropping/collating is waited for);
* ``prefetch``: ``data.num_workers=W`` with prefetching (the trainer's setting).

and twice more streaming the same clips from WebDataset shards written by
``audiocl export webdataset`` (``data.webdataset``, no store: decode and
resample in the loader, log-mel on the training device, here the CPU):

* ``stream_sync``: ``num_workers=0``; ``stream_prefetch``: ``num_workers=W``.

On a CPU-only machine the streamed log-mel runs in the training process, so
it counts as step time, not as data wait; ``stream_vs_store_step_ratio`` says
what it costs per step there.

The trainer's own timer measures, per step, the time blocked in ``next()`` on
the loader (``data_wait``) and the whole step (``step_time``). Prints one JSON
object: the data-wait fraction of each run (all steps, and steady state
without the first logging window, which includes worker start-up), their
ratio, and whether the prefetch run meets the 5 % target.

    python benchmarks/train_data_wait.py [--items 256] [--steps 40] [--workers 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_manifest(root: Path, n: int) -> Path:
    from audiocl.data.manifest import AudioItem, write_manifest

    files = sorted((SHARED / "data" / "fsdd-dev" / "recordings").glob("*.wav"))[:n]
    items = []
    if files:
        for f in files:
            d, spk, _ = f.stem.split("_")
            items.append(AudioItem(id=f.stem, path=str(f), texts=[f"{spk} says {DIGITS[int(d)]}"], labels=[d]))
    else:
        rng = np.random.default_rng(0)
        (root / "wav").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k = i % 10
            t = np.arange(int(8000 * rng.uniform(0.3, 1.0))) / 8000
            wav = 0.3 * np.sin(2 * np.pi * (200 + 60 * k) * t) + 0.01 * rng.standard_normal(len(t))
            p = root / "wav" / f"{i:05d}.wav"
            sf.write(p, wav.astype(np.float32), 8000)
            items.append(AudioItem(id=p.stem, path=str(p), texts=[f"tone {DIGITS[k]}"], labels=[str(k)]))
    manifest = root / "manifest.jsonl"
    write_manifest(items, manifest)
    return manifest


def run(cfg_dict: dict, out: Path) -> dict:
    from audiocl.train.config import TrainingConfig
    from audiocl.train.run import train

    cfg = TrainingConfig.model_validate({**cfg_dict, "train": {**cfg_dict["train"], "output_dir": str(out)}})
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    wait = np.array([float(r["data_wait"]) for r in rows])
    step = np.array([float(r["step_time"]) for r in rows])
    return {
        "data_wait_frac": float(wait.sum() / step.sum()),
        "data_wait_frac_steady": float(wait[1:].sum() / step[1:].sum()),
        "mean_step_s": float(step.sum() / int(rows[-1]["step"])),
        "wall_s": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers in the prefetch run")
    ap.add_argument("--max-frames", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract

    with tempfile.TemporaryDirectory(prefix="audiocl-bench-") as tmp:
        root = Path(tmp)
        manifest = make_manifest(root, args.items)
        t0 = time.perf_counter()
        extract(manifest, root / "store", get_preset("speech16k", n_mels=64), runner="inline",
                progress=False, shard_size=64)  # fmt: skip
        extract_s = time.perf_counter() - t0
        base = {
            "model": {
                "embed_dim": 64,
                "towers": {
                    "audio": {"modality": "audio",
                              "encoder": {"type": "cnn", "variant": "cnn6", "width": "tiny", "n_mels": 64},
                              "projection": {"type": "linear"}},
                    "text": {"modality": "text",
                             "encoder": {"type": "small_text", "d_model": 64, "layers": 2, "heads": 4, "max_length": 48},
                             "projection": {"type": "linear"}},
                },
            },
            "loss": {"name": "clip"},
            "data": {"store": str(root / "store"), "manifest": str(manifest), "batch_size": args.batch,
                     "max_frames": args.max_frames, "length_policy": "rand_trunc"},
            "train": {"max_steps": args.steps, "log_every": 5, "progress": False, "ckpt_every": 10_000},
        }  # fmt: skip
        sync = run({**base, "data": {**base["data"], "num_workers": 0}}, root / "sync")
        pre = run({**base, "data": {**base["data"], "num_workers": args.workers}}, root / "prefetch")
        from audiocl.data.webdataset import export_webdataset

        per_tar = max(1, args.items // (4 * max(1, args.workers)))
        export_webdataset(root / "store", manifest, root / "shards", samples_per_tar=per_tar, sample_rate=16000)
        stream = {k: v for k, v in base["data"].items() if k not in ("store", "manifest")}
        stream.update(webdataset=str(root / "shards"), frontend={"preset": "speech16k", "n_mels": 64},
                      shuffle_buffer=64)  # fmt: skip
        s_sync = run({**base, "data": {**stream, "num_workers": 0}}, root / "stream_sync")
        s_pre = run({**base, "data": {**stream, "num_workers": args.workers}}, root / "stream_prefetch")
    result = {
        "benchmark": "train_data_wait",
        "items": args.items, "steps": args.steps, "batch": args.batch, "max_frames": args.max_frames,
        "prefetch_workers": args.workers, "extract_s": round(extract_s, 2),
        "sync": sync, "prefetch": pre,
        "prefetch_vs_sync_wait_ratio": pre["data_wait_frac"] / max(sync["data_wait_frac"], 1e-12),
        "stream_sync": s_sync, "stream_prefetch": s_pre,
        "stream_prefetch_vs_sync_wait_ratio": s_pre["data_wait_frac"] / max(s_sync["data_wait_frac"], 1e-12),
        "stream_vs_store_step_ratio": s_pre["mean_step_s"] / pre["mean_step_s"],
        "stream_meets_target": s_pre["data_wait_frac"] <= 0.05,
        "target_frac": 0.05,
        "meets_target": pre["data_wait_frac"] <= 0.05,
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
