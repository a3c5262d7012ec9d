#!/usr/bin/env python3
"""Stage 15 of clap_sfx: two-event clips for the CompA-style compositional test.

From each split's single-label clips (train, val, test manifests of stage 1),
``audiocl.data.compose.make_compositions`` writes ``A followed by B`` and
``A and B at the same time`` clips with the swapped captions as
``hard_negatives``; one manifest a split plus ``all.jsonl`` (for extraction).
Deterministic (a fixed seed a split).

    python local/build_compositions.py --manifests data/manifests --out data/compa
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiocl.data.compose import make_compositions
from audiocl.data.manifest import read_manifest, write_manifest
from audiocl.errors import AudioclError

#: clips made per split, and the seed of each split's pairs
SIZES = {"train": (1500, 0), "val": (200, 1), "test": (400, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="two-event clips for the compositional test")
    ap.add_argument("--manifests", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        every = []
        counts = {}
        for split, (n, seed) in SIZES.items():
            items = list(read_manifest(Path(args.manifests) / f"{split}.jsonl"))
            rows = make_compositions(items, out / "audio" / split, n, seed=seed, prefix=f"compa_{split}")
            write_manifest(rows, out / f"{split}.jsonl")
            every += rows
            counts[split] = len(rows)
        write_manifest(every, out / "all.jsonl")
    except AudioclError as e:
        print(f"build_compositions: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
