#!/usr/bin/env python3
"""How soft CWCL's targets are on this corpus: statistics of its weights.

CWCL (``audiocl/losses/cwcl.py``) weights every pair of a batch by
``w_ij = (1 + <t_i, t_j>)/2`` from the frozen text tower and normalises rows,
so the share of a row's target mass on its own pair is ``1 / sum_j w_ij``.
This script draws training batches the way the trainer does (random clips,
one text each), embeds the texts with the trained model's frozen text tower
and reports the mean off-diagonal weight, the mean diagonal target share, and
for comparison InfoNCE's share (1.0) and the uniform share ``1/B``.

    python local/cwcl_weight_stats.py --model exp/en_cwcl/train/model \
        --manifest data/manifests/en/train.jsonl --out exp/en_cwcl/eval/cwcl_weights.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CWCL weight statistics on training batches")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    from audiocl.data.manifest import read_manifest
    from audiocl.eval.embed import embed_strings
    from audiocl.losses.cwcl import cwcl_weights
    from audiocl.models import load_model

    model = load_model(a.model)
    texts = [it.texts[0] for it in read_manifest(a.manifest)]
    rng = random.Random(0)
    off, share, dup = [], [], []
    for _ in range(a.batches):
        batch = rng.sample(texts, min(a.batch_size, len(texts)))
        w = cwcl_weights(embed_strings(model, batch).float())
        n = w.shape[0]
        mask = ~torch.eye(n, dtype=torch.bool)
        off.append(float(w[mask].mean()))
        share.append(float((1.0 / w.sum(1)).mean()))
        dup.append(n - len(set(batch)))
    res = {"batch_size": a.batch_size, "batches": a.batches,
           "mean_offdiag_weight": sum(off) / len(off),
           "mean_own_pair_target_share": sum(share) / len(share),
           "uniform_share": 1.0 / a.batch_size, "infonce_own_pair_share": 1.0,
           "mean_duplicate_texts_per_batch": sum(dup) / len(dup)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
