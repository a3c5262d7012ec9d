"""The training loader from a feature store against a plain memory copy of the same bytes.

Builds (or reuses, ``--store``) a laion_clap store of N ten-second clips made from
real ESC-50 recordings, then, in this one process (one core, one torch thread):

* ``loader``: the trainer's own pieces, as ``audiocl.train.loop`` wires them:
  :class:`~audiocl.data.loader.FeatureDataset` (memory-mapped shards, each item
  copied out) -> :class:`~audiocl.train.data.GlobalBatchSampler` over the
  store's :class:`~audiocl.data.loader.ShardShuffleSampler` order ->
  ``SeededDataset``/``SeededCollate`` around ``FeatureCollate`` (the laion
  length policy ``repeatpad+rand_trunc`` to ``--max-frames``) ->
  ``torch.utils.data.DataLoader(num_workers=0)``, batches of ``--batch-size``,
  to a consumer that does nothing. The first epoch warms the page cache;
  epochs 2.. are timed.
* ``memcpy``: the limit: the same number of bytes per clip (``max_frames x n_mels``
  float32, what a batch delivers) copied from an in-memory array into a batch
  buffer with ``np.copyto``, batch by batch.

Reported: clips/s per core of each, their ratio, and how many cores a GPU
training at ``--gpu-clips-per-s`` (default 2000) would need for its loader.

    python benchmarks/loader_vs_memcpy.py [--clips 256] [--store DIR] [--epochs 3]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
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
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--store", type=Path, default=None, help="an existing laion_clap store to read")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-frames", type=int, default=1001)
    ap.add_argument("--policy", default="repeatpad+rand_trunc")
    ap.add_argument("--epochs", type=int, default=3, help="epochs read; the first (page cache) is not timed")
    ap.add_argument("--gpu-clips-per-s", type=float, default=2000.0)
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "esc50-sample" / "audio")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "audiocl-bench-cache"))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from audiocl.data.loader import FeatureDataset, ShardShuffleSampler
    from audiocl.train.data import GlobalBatchSampler, SeededCollate, SeededDataset
    from audiocl.train.run import FeatureCollate

    tmp = None
    store_dir = args.store
    if store_dir is None:
        from audiocl.audio.frontend import get_preset
        from audiocl.data.extract import extract

        manifest = make_corpus(Path(args.cache), args.clips, 10.0, args.real)
        tmp = Path(tempfile.mkdtemp(prefix="loader_bench_", dir=args.cache))
        store_dir = tmp / "store"
        extract(manifest, store_dir, get_preset("laion_clap"), workers=2, shard_size=64, progress=False)

    ds = FeatureDataset(store_dir)
    n, n_mels = len(ds), ds.store.config.n_mels
    shuffler = ShardShuffleSampler(ds.shards(), seed=0, window=None)

    def order(epoch: int, seed: int) -> np.ndarray:
        shuffler.set_epoch(epoch)
        return shuffler.permutation()

    sampler = GlobalBatchSampler(n, args.batch_size, seed=0, order=order, drop_last=True)
    loader = torch.utils.data.DataLoader(
        SeededDataset(ds), batch_sampler=sampler,
        collate_fn=SeededCollate(FeatureCollate(args.max_frames, args.policy)), num_workers=0)
    clips = 0
    t_loader = c_loader = 0.0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in loader:
            assert batch["features"].shape[1:] == (args.max_frames, n_mels)
            if epoch:
                clips += batch["features"].shape[0]
        if epoch:
            t_loader += time.perf_counter() - t0
            c_loader += time.process_time() - c0

    # the limit: the same bytes per clip copied from memory into a batch buffer
    per_clip = args.max_frames * n_mels
    src = np.random.default_rng(0).standard_normal((args.batch_size * 8, per_clip), dtype=np.float32)
    dst = np.empty((args.batch_size, per_clip), dtype=np.float32)
    copied = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while copied < clips:
        k = (copied // args.batch_size) % 8
        np.copyto(dst, src[k * args.batch_size : (k + 1) * args.batch_size])
        copied += args.batch_size
    t_copy, c_copy = time.perf_counter() - t0, time.process_time() - c0
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)

    # per core: CPU seconds, so that the machine's other users do not count
    loader_rate = clips / c_loader
    copy_rate = copied / max(c_copy, 1e-9)
    result = {
        "benchmark": "loader_vs_memcpy", "items": n, "batch_size": args.batch_size,
        "max_frames": args.max_frames, "n_mels": n_mels, "policy": args.policy,
        "clips_timed": clips, "loadavg_1min": round(os.getloadavg()[0], 2),
        "mb_per_clip": round(per_clip * 4 / 2**20, 3),
        "loader_clips_per_s_per_core": round(loader_rate, 1),
        "loader_clips_per_s_wall": round(clips / t_loader, 1),
        "memcpy_clips_per_s_per_core": round(copy_rate, 1),
        "memcpy_clips_per_s_wall": round(copied / t_copy, 1),
        "loader_over_memcpy": round(loader_rate / copy_rate, 3),
        "gpu_clips_per_s": args.gpu_clips_per_s,
        "loader_cores_needed": math.ceil(args.gpu_clips_per_s / loader_rate),
        "loader_cores_needed_exact": round(args.gpu_clips_per_s / loader_rate, 2),
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
