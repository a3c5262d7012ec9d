"""Manifest read/write throughput against plain ``json`` line loops in the same process.

Baselines: reading = ``json.loads`` of every line of the same file (no
validation, no objects); writing = ``json.dumps`` of every dict to a plain file
(no validation, no atomic rename). The ratios say what validation, typed
records and atomicity cost. Also checks that the first item of the big file
comes back without reading the whole file (laziness), as a time ratio.

    python benchmarks/manifest_io.py [--items 200000]

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiocl.data.manifest import AudioItem, read_manifest, write_manifest  # noqa: E402


def make_items(n: int) -> list[AudioItem]:
    return [
        AudioItem(
            id=f"bench/{i:08d}",
            path=f"audio/fold{i % 10}/{i:08d}.wav",
            duration=4.0 + (i % 7) * 0.25,
            sampling_rate=44100,
            num_samples=176400 + (i % 7) * 11025,
            channels=1 + i % 2,
            texts=[f"caption number {i} of a sound", "another caption"],
            labels=[f"class_{i % 50}"],
            split="train",
            source="bench",
            license="CC BY 4.0",
            custom={"fold": i % 10, "salience": 1},
        )
        for i in range(n)
    ]


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_one(tmp: str, suffix: str, items: list[AudioItem], dicts: list[dict]) -> dict:
    n = len(items)
    path = Path(tmp) / f"m{suffix}"
    plain = Path(tmp) / f"plain{suffix}"
    opener = gzip.open if suffix.endswith(".gz") else open

    def write_ours() -> None:
        write_manifest(items, path)

    def write_plain() -> None:
        with opener(plain, "wt", encoding="utf-8") as fh:
            for d in dicts:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")

    def read_ours() -> None:
        count = sum(1 for _ in read_manifest(path))
        assert count == n

    def read_plain() -> None:
        with opener(plain, "rt", encoding="utf-8") as fh:
            count = sum(1 for line in fh if json.loads(line))
        assert count == n

    def first_item() -> None:
        next(iter(read_manifest(path)))

    tw, twb = best_of(write_ours), best_of(write_plain)
    tr, trb = best_of(read_ours), best_of(read_plain)
    tf = best_of(first_item, repeat=5)
    return {
        "read_items_per_s": round(n / tr),
        "read_baseline_items_per_s": round(n / trb),
        "read_ratio_vs_json_loads": round(trb / tr, 3),
        "write_items_per_s": round(n / tw),
        "write_ratio_vs_json_dumps": round(twb / tw, 3),
        "first_item_s": round(tf, 6),
        "full_read_over_first_item": round(tr / tf, 1),
        "file_mb": round(os.path.getsize(path) / 1e6, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200_000)
    args = ap.parse_args()
    items = make_items(args.items)
    dicts = [it.to_dict() for it in items]
    result: dict[str, object] = {"benchmark": "manifest_io", "items": args.items}
    with tempfile.TemporaryDirectory() as tmp:
        for key, suffix in (("jsonl", ".jsonl"), ("gz", ".jsonl.gz")):
            result[key] = run_one(tmp, suffix, items, dicts)
            print(f"{key}: {result[key]}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
