"""Frozen-tower embedding extraction against the same tower's bare forward pass.

Builds a store of N ten-second clips made from real ESC-50 recordings with the
``aisfx`` front-end (96 mels), then:

* ``extract``: :func:`audiocl.data.tower_features.extract_tower_features` of a
  frozen pretrained ``aisfx`` tower (the real weights from the ``aisfx`` wheel),
  ``--workers`` worker processes, one torch thread each, batches of ``--batch-size``;
* ``bound``: the same encoder's forward pass alone, one thread, on one batch of
  ``--batch-size`` stored log-mels already in memory (best of 3), in this process.

Reported: the extraction's clips/s (wall, worker start-up included, and from the
workers' CPU time per clip, which the machine's other users inflate less) and
the bound's clips/s for the same number of threads; the ratios are
extraction / bound (1.0: the extraction costs nothing beyond the forward pass).

    python benchmarks/tower_features_vs_forward.py [--clips 48] [--workers 2] [--batch-size 16]

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

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "esc50-sample" / "audio")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "audiocl-bench-cache"))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.store import FeatureStore
    from audiocl.data.tower_features import _frozen_encoder, extract_tower_features

    cache = Path(args.cache)
    manifest = make_corpus(cache, args.clips, 10.0, args.real)
    store_dir = Path(tempfile.mkdtemp(prefix="tower_bench_", dir=cache)) / "store"
    extract(manifest, store_dir, get_preset("aisfx"), workers=args.workers, shard_size=args.batch_size,
            progress=False)
    config = {"embed_dim": 16, "towers": {
        "audio": {"modality": "audio", "encoder": {"type": "aisfx"}, "frozen": True, "cache": True,
                  "projection": {"type": "linear"}},
        "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2},
                 "projection": {"type": "linear"}}}}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    s = extract_tower_features(store_dir, config, "audio", workers=args.workers, batch_size=args.batch_size)
    wall = time.perf_counter() - t0
    assert s["computed_this_run"] == args.clips, s

    # the bound: one batch of stored log-mels, the encoder alone, one thread
    store = FeatureStore(store_dir)
    _, enc = _frozen_encoder(config, "audio")
    ids = store.ids()[: args.batch_size]
    mels = [np.asarray(store[i], dtype=np.float32) for i in ids]
    lens = torch.tensor([m.shape[0] for m in mels])
    x = torch.zeros(len(mels), int(lens.max()), mels[0].shape[1])
    for k, m in enumerate(mels):
        x[k, : m.shape[0]] = torch.from_numpy(m)
    best_wall, best_cpu = float("inf"), float("inf")
    with torch.inference_mode():
        enc(x, lens)  # warm-up
        for _ in range(3):
            t1, c1 = time.perf_counter(), time.process_time()
            enc(x, lens)
            best_wall = min(best_wall, time.perf_counter() - t1)
            best_cpu = min(best_cpu, time.process_time() - c1)
    bound_ms = 1000 * best_wall / len(ids)
    bound_cpu_ms = 1000 * best_cpu / len(ids)
    shutil.rmtree(store_dir.parent, ignore_errors=True)
    result = {
        "benchmark": "tower_features_vs_forward", "tower": "aisfx (pretrained, frozen)",
        "clips": args.clips, "clip_seconds": 10.0, "workers": args.workers, "batch_size": args.batch_size,
        "loadavg_1min_before": round(load, 2),
        "extract_wall_s": round(wall, 2),
        "extract_clips_per_s_wall": round(args.clips / wall, 2),
        "extract_cpu_ms_per_clip": s["cpu_ms_per_clip"],
        "bound_ms_per_clip_1thread": round(bound_ms, 2),
        "bound_cpu_ms_per_clip_1thread": round(bound_cpu_ms, 2),
        "bound_clips_per_s": round(args.workers * 1000 / bound_ms, 2),
        # CPU per clip: the extraction's per-shard work (reading mels, batching, the
        # forward, writing) over the forward alone; wall: everything, Ray start-up included
        "ratio_cpu_bound_over_extract": round(bound_cpu_ms / s["cpu_ms_per_clip"], 3),
        "ratio_wall_extract_over_bound": round((args.clips / wall) / (args.workers * 1000 / bound_ms), 3),
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
