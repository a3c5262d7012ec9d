"""End-to-end extraction throughput: 1 worker process (baseline) vs 2, same process.

Makes N ten-second 44.1 kHz FLAC clips (tones + noise, cached under --cache so
reruns skip it), then runs ``audiocl.data.extract.extract`` with the
``laion_clap`` preset (decode -> check -> mono -> soxr 44.1->48 kHz -> log-mel
-> shard write) into a fresh store with 1 worker and with 2 workers, and checks
both stores have the same content hash.

clips/s counts from the moment the pool exists to the last shard written
(worker start-up included); steady clips/s from the first shard begun
to the last written (worker start-up excluded); ``wall_s`` includes everything. The
machine's load average is reported because other users share the CPUs, and so
is the workers' CPU time per clip and stage (decode, resample, log-mel, write),
which a busy machine inflates far less than wall-clock rates.

    python benchmarks/extract_throughput.py [--clips 2000] [--shard-size 100]
        [--real ../shared/data/esc50-sample/audio]   # clips made of real recordings

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_common import make_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "audiocl-bench-cache"))
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts; the first is the baseline")
    ap.add_argument("--real", type=Path, default=None,
                    help="folder of real 44.1 kHz WAV recordings (e.g. ESC-50's audio/) to build the "
                         "clips from; default: synthetic tones + white noise")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.store import content_hash

    cache = Path(args.cache)
    manifest = make_corpus(cache, args.clips, args.seconds, args.real)
    cfg = get_preset("laion_clap")
    runs = []
    hashes = set()
    for w in [int(x) for x in args.workers.split(",")]:
        out = Path(tempfile.mkdtemp(prefix=f"store_w{w}_", dir=cache))
        shutil.rmtree(out)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        s = extract(manifest, out, cfg, workers=w, shard_size=args.shard_size,
                    dtype=args.dtype, progress=False)
        wall = time.perf_counter() - t0
        assert s["done"] == args.clips and s["failed"] == 0, s
        hashes.add(content_hash(out))
        runs.append({
            "workers": w,
            "clips_per_s": s["clips_per_second"],
            "steady_clips_per_s": s["steady_clips_per_second"],
            "extract_s": s["extract_seconds"],
            "pool_start_s": s["start_seconds"],
            "wall_s": round(wall, 2),
            "clips_per_s_wall": round(args.clips / wall, 2),
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
            "worker_cpu_ms_per_clip": s["cpu_ms_per_clip"],
        })
        print(json.dumps(runs[-1]), file=sys.stderr)
        shutil.rmtree(out)
    base = runs[0]
    result = {
        "benchmark": "extract_throughput",
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "input": "FLAC 44.1 kHz mono 16-bit, " + (f"real recordings from {args.real}" if args.real else "synthetic tones + noise"),
        "preset": "laion_clap",
        "shard_size": args.shard_size,
        "dtype": args.dtype,
        "cpus": os.cpu_count(),
        "runs": runs,
        "stores_identical": len(hashes) == 1,
    }
    # what the measured worker CPU time allows when each worker has a core to itself
    # (an upper bound that ignores Ray and file-system waits; compare with the real rate)
    cpu_ms = sum(base["worker_cpu_ms_per_clip"].values())
    result["worker_cpu_ms_per_clip_total"] = round(cpu_ms, 3)
    for r in runs:
        result[f"cpu_bound_clips_per_s_{r['workers']}w"] = round(r["workers"] * 1000 / cpu_ms, 1)
    for r in runs[1:]:
        result[f"speedup_{r['workers']}w_vs_{base['workers']}w"] = round(r["clips_per_s"] / base["clips_per_s"], 3)
        result[f"steady_speedup_{r['workers']}w_vs_{base['workers']}w"] = round(
            r["steady_clips_per_s"] / base["steady_clips_per_s"], 3)
    for r in runs:
        result[f"clips_per_s_{r['workers']}w"] = r["clips_per_s"]
        result[f"steady_clips_per_s_{r['workers']}w"] = r["steady_clips_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
