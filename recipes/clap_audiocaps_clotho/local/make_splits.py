"""Training, validation and test manifests from the AudioCaps and Clotho manifests.

train: AudioCaps train + Clotho development; val: AudioCaps val + Clotho
validation; tests, kept apart: AudioCaps test and Clotho evaluation (the
5-caption retrieval benchmarks). ``all.jsonl`` (every clip) is what stage 1
extracts. A clip id in two splits is an error: test audio must never be trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiocl.data.manifest import read_manifest, write_manifest

SPLITS = {
    "train": [("audiocaps", "train"), ("clotho", "development")],
    "val": [("audiocaps", "val"), ("clotho", "validation")],
    "audiocaps_test": [("audiocaps", "test")],
    "clotho_evaluation": [("clotho", "evaluation")],
}


def make(manifests: dict[str, Path], out: Path) -> dict[str, int]:
    items = {name: list(read_manifest(p)) for name, p in manifests.items() if p.is_file()}
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    everything = []
    for split, sources in SPLITS.items():
        chosen = [it for ds, sp in sources for it in items.get(ds, []) if it.split == sp]
        for it in chosen:
            if it.id in seen:
                raise SystemExit(f"clip {it.id} is in both {seen[it.id]} and {split}")
            seen[it.id] = split
        counts[split] = write_manifest(chosen, out / f"{split}.jsonl")
        everything += chosen
    counts["all"] = write_manifest(everything, out / "all.jsonl")
    if counts["train"] == 0:
        raise SystemExit("no training clips: neither AudioCaps train nor Clotho development was found")
    return counts


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--audiocaps", type=Path, required=True, help="manifest of audiocl prepare audiocaps")
    ap.add_argument("--clotho", type=Path, required=True, help="manifest of audiocl prepare clotho")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    counts = make({"audiocaps": a.audiocaps, "clotho": a.clotho}, a.out)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
