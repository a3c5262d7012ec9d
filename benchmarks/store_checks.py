"""What the feature store's integrity checks cost (issue 14).

Builds a synthetic store (``--items`` log-mels of 5 s clips: 501 frames x 64 mels,
float32, shards of 256) with the project's own writer, then measures, in CPU
seconds (``time.process_time``: the machine is shared, wall-clock mostly measures
the other users), the median of repeated:

* ``FeatureStore(dir)`` with the cheap checks switched off (the baseline);
* ``FeatureStore(dir)`` with them (what every open does);
* ``check_store`` alone;
* ``verify_store`` (the full sha256 of every file: ``audiocl info --verify``).

Prints one JSON object as its last line.

    python benchmarks/store_checks.py [--items 2000] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import audiocl.data.store as st


def build(out: Path, n: int, k: int = 256) -> None:
    fe = {"sample_rate": 48000, "n_mels": 64, "hop_length": 480, "n_fft": 1024}
    w = st.StoreWriter.create(out, st.StoreParams(frontend=fe, frontend_hash="bench", shard_size=k))
    rng = np.random.default_rng(0)
    shards = (n + k - 1) // k
    for s in range(shards):
        ids = range(s * k, min(n, (s + 1) * k))
        w.write_shard(s, f"spec{s}", [{"id": f"esc/{i:05d}"} for i in ids],
                      [rng.standard_normal((501, 64), dtype=np.float32) for _ in ids], None, [])
    w.finalize(shards)


def cpu_median(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--store", default=None, help="reuse/keep the store here (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.store) if args.store else Path(tmp) / "store"
        if not (out / "index.jsonl").exists():
            build(out, args.items)
        with_checks = cpu_median(lambda: st.FeatureStore(out), 15)
        real = st.check_store
        st.check_store = lambda *a, **k: None
        try:
            without = cpu_median(lambda: st.FeatureStore(out), 15)
        finally:
            st.check_store = real
        raw: list[bytes] = []
        rows = st._read_index(out / "index.jsonl", raw)
        params = st.read_params(out)
        alone = cpu_median(lambda: st.check_store(out, params, rows, raw), 15)
        verify = cpu_median(lambda: st.verify_store(out), 3)
        size = sum(f.stat().st_size for f in (out / "shards").iterdir())
        print(json.dumps({
            "items": len(rows), "shards": len(list((out / "shards").glob("*.done"))),
            "store_mb": round(size / 2**20, 1),
            "open_without_checks_cpu_ms": round(1000 * without, 2),
            "open_with_cheap_checks_cpu_ms": round(1000 * with_checks, 2),
            "cheap_checks_alone_cpu_ms": round(1000 * alone, 2),
            "open_ratio_with_vs_without": round(with_checks / without, 2) if without else None,
            "full_verify_cpu_s": round(verify, 3),
            "verify_mb_per_cpu_s": round(size / 2**20 / verify, 1) if verify else None,
        }))


if __name__ == "__main__":
    main()
